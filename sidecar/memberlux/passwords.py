"""Checking a password against a ``users.user_pass`` value, the way WordPress's ``wp_check_password`` does.

A site holds a mix of formats because WordPress re-hashes only at login (core.md 12):

* ``$wp$2y$…`` — WordPress 6.8+: bcrypt over base64(HMAC-SHA384(key ``wp-sha384``, password));
* ``$P$…`` / ``$H$…`` — phpass portable hashes (salted, iterated MD5); ``$H$`` is phpBB's spelling;
* ``$2y$`` / ``$2b$`` / ``$2a$`` — plain bcrypt written by some plugins;
* 32 hex digits — unsalted MD5 from very old installs.

Anything else is refused. The password is taken as given: WordPress trims it in ``wp_authenticate``
before it gets here, and so does our login form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import bcrypt

__all__ = ["verify_wordpress_password", "phpass_portable_hash"]

#: WordPress refuses longer passwords outright for every salted format (a bcrypt/phpass DoS guard).
MAX_PASSWORD_LENGTH = 4096
_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
# $2x$ is the old buggy variant: PHP verifies it differently for 8-bit input, so it is not accepted.
_BCRYPT_IDENTS = ("$2y$", "$2b$", "$2a$")
_WP_PREHASH_KEY = b"wp-sha384"
_BCRYPT_MAX_BYTES = 72  # PHP's crypt() silently ignores the rest; the bcrypt package raises instead


def _encode64(data: bytes, count: int) -> str:
    """phpass's own little-endian base64 (not RFC 4648), 6 bits per character."""
    out: list[str] = []
    i = 0
    while i < count:
        value = data[i]
        i += 1
        out.append(_ITOA64[value & 0x3F])
        if i < count:
            value |= data[i] << 8
        out.append(_ITOA64[(value >> 6) & 0x3F])
        if i >= count:
            break
        i += 1
        if i < count:
            value |= data[i] << 16
        out.append(_ITOA64[(value >> 12) & 0x3F])
        if i >= count:
            break
        i += 1
        out.append(_ITOA64[(value >> 18) & 0x3F])
    return "".join(out)


def phpass_portable_hash(password: bytes, setting: str) -> str | None:
    """phpass ``crypt_private``: the full hash for ``password`` under ``setting`` (its first 12 chars).

    ``None`` where phpass would return its ``*0``/``*1`` failure marker (bad ident, cost or salt).
    """
    if setting[:3] not in ("$P$", "$H$") or len(setting) < 12 or not setting.isascii():
        return None
    count_log2 = _ITOA64.find(setting[3])
    if count_log2 < 7 or count_log2 > 30:
        return None
    salt = setting[4:12]
    digest = hashlib.md5(salt.encode("ascii") + password).digest()  # noqa: S324 - phpass, as WordPress stores it
    for _ in range(1 << count_log2):
        digest = hashlib.md5(digest + password).digest()  # noqa: S324 - phpass, as WordPress stores it
    return setting[:12] + _encode64(digest, 16)


def _verify_phpass(password: bytes, stored: str) -> bool:
    if len(stored) != 34:
        return False
    computed = phpass_portable_hash(password, stored)
    return computed is not None and hmac.compare_digest(computed.encode("ascii"), stored.encode("ascii"))


def _verify_bcrypt(password: bytes, stored: str) -> bool:
    # The bcrypt package knows only "$2b$" by name; "$2y$" and "$2a$" (PHP) are the same algorithm.
    normalised = "$2b$" + stored[4:]
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_BYTES], normalised.encode("ascii"))
    except ValueError:  # malformed salt/cost or non-ASCII junk in the stored value
        return False


def verify_wordpress_password(password: str, stored_hash: str) -> bool:
    """True when ``password`` matches ``stored_hash`` in any format WordPress itself accepts."""
    if not isinstance(password, str) or not isinstance(stored_hash, str):
        return False
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot have been typed into WordPress either
        return False

    if len(stored_hash) <= 32:
        # WordPress compares md5() for every short value; only a real MD5 hex digest can ever match.
        if not _MD5_HEX.fullmatch(stored_hash):
            return False
        return hmac.compare_digest(hashlib.md5(secret).hexdigest(), stored_hash)  # noqa: S324 - very old WordPress hashes

    if len(password) > MAX_PASSWORD_LENGTH or not stored_hash.isascii():
        return False
    if stored_hash.startswith("$wp$"):
        inner = stored_hash[3:]
        if not inner.startswith(_BCRYPT_IDENTS):
            return False
        prehash = base64.b64encode(hmac.new(_WP_PREHASH_KEY, secret, hashlib.sha384).digest())
        return _verify_bcrypt(prehash, inner)
    if stored_hash.startswith(("$P$", "$H$")):
        return _verify_phpass(secret, stored_hash)
    if stored_hash.startswith(_BCRYPT_IDENTS):
        return _verify_bcrypt(secret, stored_hash)
    return False
