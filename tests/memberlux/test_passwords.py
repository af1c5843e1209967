"""WordPress password hashes: every format of core.md 12, checked against independently computed vectors."""

from __future__ import annotations

import hashlib
import random

import pytest

from sidecar.devstack import seed
from sidecar.memberlux.passwords import phpass_portable_hash, verify_wordpress_password

# phpass portable vectors. The first is the one phpass's own test.php ships; the others were computed
# once with passlib's phpass handler (an implementation independent of ours) and written down here.
PHPASS_VECTORS = [
    ("test12345", "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0"),
    ("password", "$P$6abcdefghBdnOAcTo80p/1Y9Dg8kIb."),
    ("", "$P$612345678zDyL1fHqeIWHq.M4xF/i6."),
    ("пароль-Ёж", "$P$6./AZaz09LqpkrzWnB8EULsFTKDmXZ0"),
    ("Correct horse battery staple", "$H$9saltsaltNoAzakJp1813a.kTXlvfu0"),
    (" spaced ", "$P$5zzzzzzzz2NRDhZkpn5R8D67UHCgMa/"),
    ("x" * 100, "$P$8ABCDEFGH5b5BnYDHaZOaEUtYuPkDD."),
    ("demo-admin-2026", "$P$BWq8sZ0dKY5O.Cz8au.JfPqvEmsVdb0"),  # cost 'B' = 2^13, what WordPress writes
]

# From the PHP manual's password_verify() example.
PHP_BCRYPT_VECTOR = ("rasmuslerdorf", "$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a")


@pytest.mark.parametrize(("password", "stored"), PHPASS_VECTORS)
def test_phpass_vectors_verify(password, stored):
    assert verify_wordpress_password(password, stored)
    assert phpass_portable_hash(password.encode("utf-8"), stored) == stored


@pytest.mark.parametrize(("password", "stored"), PHPASS_VECTORS)
def test_phpass_rejects_near_misses(password, stored):
    assert not verify_wordpress_password(password + "x", stored)
    assert not verify_wordpress_password(password.upper() + "!", stored)
    # One character of the checksum changed.
    tampered = stored[:-1] + ("." if stored[-1] != "." else "/")
    assert not verify_wordpress_password(password, tampered)


def test_phpass_refuses_what_phpass_refuses():
    good = "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0"
    assert phpass_portable_hash(b"test12345", "$P$5" + good[4:]) is not None  # 2^7: the smallest cost
    assert phpass_portable_hash(b"test12345", "$P$4" + good[4:]) is None  # 2^6: below phpass's minimum
    assert phpass_portable_hash(b"test12345", "$X$9IQRaTwmf") is None
    assert phpass_portable_hash(b"test12345", "$P$9IQRa") is None
    assert not verify_wordpress_password("test12345", good[:-1])  # truncated hash


def test_wordpress_68_bcrypt_round_trip_with_the_seed():
    rng = random.Random(7)
    for password in ("demo-admin-2026", "пароль с пробелами", "ü" * 80):
        stored = seed.wp_password_hash(password, rng=rng, rounds=4)
        assert stored.startswith("$wp$2y$04$")
        assert verify_wordpress_password(password, stored)
        assert not verify_wordpress_password(password + " extra", stored)
    # Long passwords keep their entropy past bcrypt's 72 bytes thanks to the HMAC pre-hash.
    stored = seed.wp_password_hash("a" * 100, rng=rng, rounds=4)
    assert verify_wordpress_password("a" * 100, stored)
    assert not verify_wordpress_password("a" * 99 + "b", stored)


def test_seeded_learner_hashes_in_every_format():
    password = seed.DEMO_LEARNER_PASSWORD
    for stored in (seed._LEARNER_HASH_WP_BCRYPT, seed._LEARNER_HASH_PHPASS, seed._LEARNER_HASH_MD5):
        assert verify_wordpress_password(password, stored), stored
        assert not verify_wordpress_password("demo-learner-2025", stored), stored


def test_plain_bcrypt_in_php_and_python_spellings():
    password, stored = PHP_BCRYPT_VECTOR
    assert verify_wordpress_password(password, stored)
    assert verify_wordpress_password(password, "$2b$" + stored[4:])
    assert verify_wordpress_password(password, "$2a$" + stored[4:])
    assert not verify_wordpress_password("rasmuslerdorF", stored)
    # The buggy pre-2011 variant is verified differently by PHP: refused rather than guessed.
    assert not verify_wordpress_password(password, "$2x$" + stored[4:])


def test_plain_bcrypt_ignores_bytes_after_72_like_php():
    import bcrypt

    stored = bcrypt.hashpw(b"k" * 72, bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    assert verify_wordpress_password("k" * 72, stored)
    assert verify_wordpress_password("k" * 72 + "anything", stored)


def test_wp_prefix_needs_a_bcrypt_body():
    password, stored = PHP_BCRYPT_VECTOR
    assert not verify_wordpress_password(password, "$wp" + stored)  # right bcrypt, but no pre-hash
    assert not verify_wordpress_password(password, "$wp$argon2id$v=19$m=65536,t=4,p=1$c2FsdA$aGFzaA")


def test_unsalted_md5_of_very_old_installs():
    assert verify_wordpress_password("password", "5f4dcc3b5aa765d61d8327deb882cf99")
    assert not verify_wordpress_password("Password", "5f4dcc3b5aa765d61d8327deb882cf99")
    # WordPress's md5() is lower-case hex and hash_equals() is exact.
    assert not verify_wordpress_password("password", "5F4DCC3B5AA765D61D8327DEB882CF99")
    assert verify_wordpress_password("пароль", hashlib.md5("пароль".encode()).hexdigest())


@pytest.mark.parametrize("stored", [
    "", "*", "*0", "x" * 40, "$1$saltsalt$abcdefghijklmnopqrstuv", "$argon2id$v=19$m=65536,t=4,p=1$c2FsdA$aGFzaA",
    "$2y$10$short", "$2y$99$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a", "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0é",
    "d41d8cd98f00b204e9800998ecf8427",  # 31 hex digits
])
def test_unknown_or_malformed_formats_are_refused(stored):
    assert not verify_wordpress_password("", stored)
    assert not verify_wordpress_password("test12345", stored)


def test_oversized_and_odd_inputs_are_refused_without_error():
    assert not verify_wordpress_password("x" * 5000, seed._LEARNER_HASH_PHPASS)
    assert not verify_wordpress_password("\ud800", seed._LEARNER_HASH_PHPASS)
    assert not verify_wordpress_password(None, seed._LEARNER_HASH_PHPASS)  # type: ignore[arg-type]
    assert not verify_wordpress_password("x", None)  # type: ignore[arg-type]
