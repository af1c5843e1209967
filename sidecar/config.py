"""One typed, validated settings object, loaded once from TOML plus ``MLS_...`` environment overrides.

Every mistake stops start-up with exit code 2 and a message naming the key, the offending value and
what was expected (``ConfigError``). Secrets are never written in the message.

Secrets (passwords, tokens, API keys) may be given as a literal, as ``env:VARIABLE`` or as
``file:/path/to/file`` (first line, trailing whitespace removed). Literal secrets belong only in a
config file that is not shared; the example uses ``env:`` references.

Environment overrides: ``MLS_<SECTION>__<KEY>=value`` (double underscore between levels), e.g.
``MLS_WORDPRESS__TABLE_PREFIX=wpx_`` or ``MLS_LOG__FORMAT=json``. Values are parsed as TOML
literals when they look like one (numbers, booleans, arrays), else taken as strings.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "MLS_"
CONFIG_ENV = "MLS_CONFIG"
DEFAULT_CONFIG_PATHS = (Path("mlsidecar.toml"), Path("/etc/mlsidecar/mlsidecar.toml"))


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` holds one line per offending key."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


class Secret:
    """A secret value that never shows itself in ``repr``/``str`` or logs."""

    __slots__ = ("_value", "origin")

    def __init__(self, value: str, origin: str) -> None:
        self._value = value
        self.origin = origin

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.origin})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_secret(reference: Any) -> Secret | None:
    if reference is None or isinstance(reference, Secret):
        return reference
    if not isinstance(reference, str):
        raise ValueError("expected a string: a literal, 'env:VARIABLE' or 'file:/path'")
    if reference == "":
        return None
    if reference.startswith("env:"):
        name = reference[4:]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"'{reference}' is not a valid environment variable reference")
        value = os.environ.get(name)
        if value is None or value == "":
            raise ValueError(f"environment variable {name} is not set or empty")
        return Secret(value, f"env:{name}")
    if reference.startswith("file:"):
        path = Path(reference[5:]).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
        value = lines[0].strip() if lines else ""
        if not value:
            raise ValueError(f"secret file {path} is empty")
        return Secret(value, f"file:{path}")
    return Secret(reference, "literal")


# Secrets the sidecar itself compares or signs with must resist guessing. 32 characters is the length
# of the shortest common 128-bit generator output (``secrets.token_hex(16)``); ``token_urlsafe(32)``
# gives 43. Length alone lets "aaaa…" through, so a few different characters are required too (32
# random hex characters have fewer than 8 different ones with a probability of about 1e-8).
# Credentials chosen by others (the Application Password, database and SMTP passwords, the amoCRM
# token) are not checked: the sidecar cannot change them.
MIN_SECRET_LENGTH = 32
MIN_SECRET_DISTINCT = 8
MIN_SIGNING_KEY_BYTES = 16
HOW_TO_GENERATE = 'generate one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
STRENGTH_NOTE = f" At least {MIN_SECRET_LENGTH} characters (e.g. secrets.token_urlsafe(32))."


def check_strength(secret: Secret | None, what: str) -> Secret | None:
    """``secret`` unchanged, or ``ValueError`` naming ``what``, the minimum and how to make a good one."""
    if secret is None:
        return None
    value = secret.reveal()
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"{what} is too short ({len(value)} characters; at least {MIN_SECRET_LENGTH} are required): "
                         + HOW_TO_GENERATE)
    if len(set(value)) < MIN_SECRET_DISTINCT:
        raise ValueError(f"{what} is too simple (fewer than {MIN_SECRET_DISTINCT} different characters): "
                         + HOW_TO_GENERATE)
    return secret


def check_signing_key(secret: Secret, what: str) -> Secret:
    """A Standard Webhooks secret: 'whsec_' and base64 of at least 16 random bytes."""
    import base64
    import binascii

    value = secret.reveal()
    if not value.startswith("whsec_"):
        raise ValueError(f"{what} must start with 'whsec_' (base64 after it), as Standard Webhooks defines")
    try:
        key = base64.b64decode(value[len("whsec_"):] + "==", validate=False)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < MIN_SIGNING_KEY_BYTES:
        raise ValueError(f"{what} is too weak: the base64 after 'whsec_' must hold at least {MIN_SIGNING_KEY_BYTES} "
                         "bytes; generate one with: python3 -c \"import base64, secrets; "
                         "print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\"")
    return secret


class Credential(Secret):
    """A named API key or bearer token with the scopes it grants (``read``, ``grant``, ``enrol``) and,
    during a rotation, the value being retired, which is still accepted under the same name."""

    __slots__ = ("previous", "scopes")

    def __init__(self, value: str, origin: str, scopes: frozenset[str], previous: Secret | None = None) -> None:
        super().__init__(value, origin)
        self.scopes = scopes
        self.previous = previous

    def values(self) -> list[str]:
        return [self.reveal()] + ([self.previous.reveal()] if self.previous is not None else [])


SCOPES = ("read", "grant", "enrol")


def scopes_of(secret: Secret | None) -> frozenset[str]:
    return secret.scopes if isinstance(secret, Credential) else frozenset()


def _secret_field(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra={"secret": True})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @field_validator("*", mode="before")
    @classmethod
    def _resolve_secrets(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name)
        if field is not None and (field.json_schema_extra or {}).get("secret"):
            return resolve_secret(value)
        return value


def _check_db_url(value: str) -> str:
    if not re.match(r"^[a-z0-9+]+://", value):
        raise ValueError("expected a SQLAlchemy URL such as 'mysql+pymysql://user@host/db' or 'sqlite:///path'")
    if re.match(r"^[a-z0-9+]+://[^/@]*:[^/@]+@", value):
        raise ValueError("put the password in the separate *_password key (env:/file: reference), not in the URL")
    return value


def _iana(value: str, fallback: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"expected an IANA time zone name such as 'Europe/Moscow', or {fallback}") from None
    return value


def _check_timezone(value: str) -> str:
    return value if value == "" else _iana(value, "'' to use the site's")


def _check_schedule_zone(value: str) -> str:
    return value if value == "site" else _iana(value, "'site' for the site's")


def _check_prefix(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_]{1,32}", value):
        raise ValueError("expected letters, digits and underscores only (WordPress $table_prefix), e.g. 'wp_'")
    return value


#: The columns the sleepers list sorts by (``web.sleepers_order``, the page, the API and the CLI).
SLEEPER_SORTS = ("expired_on", "days_since", "name", "email", "level")


def sleepers_order(value: str) -> tuple[str, bool]:
    """``"<column> asc|desc"`` as ``(column, descending)``; a clear ValueError otherwise."""
    parts = value.split()
    if len(parts) != 2 or parts[0] not in SLEEPER_SORTS or parts[1] not in ("asc", "desc"):
        raise ValueError(f"expected '<column> asc' or '<column> desc' with a column of {', '.join(SLEEPER_SORTS)}, "
                         "e.g. 'expired_on desc' (most recent expiry first)")
    return parts[0], parts[1] == "desc"


def _check_sleepers_order(value: str) -> str:
    sleepers_order(value)
    return " ".join(value.split())


DbUrl = Annotated[str, AfterValidator(_check_db_url)]
TimezoneName = Annotated[str, AfterValidator(_check_timezone)]
ScheduleZone = Annotated[str, AfterValidator(_check_schedule_zone)]
TablePrefix = Annotated[str, AfterValidator(_check_prefix)]


class WordPressSettings(_Section):
    db_url: DbUrl = Field(description="SQLAlchemy URL of the WordPress database, read-only user recommended (sql/readonly-user.sql).")
    db_password: Secret | None = _secret_field("Password of the WordPress database user.")
    table_prefix: TablePrefix = Field("wp_", description="WordPress $table_prefix of the site (multisite: the sub-site prefix, e.g. 'wp_2_').")
    base_prefix: TablePrefix | Literal[""] = Field("", description="Multisite only: network prefix of users/usermeta; '' = same as table_prefix.")
    timezone: TimezoneName = Field("", description="Override of the site time zone (display and schedules); '' = read from wp_options.")
    connect_timeout_seconds: int = Field(5, ge=1, le=120, description="Connect timeout for the WordPress database.")
    include_basket_keys: bool = Field(True, description="Count used keys moved to the admin's basket as access (MemberLux itself does).")

    @property
    def users_prefix(self) -> str:
        return self.base_prefix or self.table_prefix


class MemberLuxSettings(_Section):
    rest_base_url: str = Field(description="Site REST root, e.g. 'https://school.example/wp-json' (the order route is <root>/mbl/v1/order).")
    rest_user: str = Field("", description="WordPress account (administrator) that owns the Application Password.")
    rest_password: Secret | None = _secret_field("The Application Password of rest_user.")
    order_dialect: Literal["woocommerce", "term_id"] = Field(
        "woocommerce", description="'woocommerce': real module, email + product_id; 'term_id': JSON with customer/product{term_id,duration,units}.")
    timeout_seconds: float = Field(90.0, gt=0, le=600, description="Timeout of one order call (the real call takes seconds).")
    verify_tls: bool = Field(True, description="Verify the site's TLS certificate.")

    @field_validator("rest_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("expected an http(s) URL such as 'https://school.example/wp-json'")
        return value.rstrip("/")


class StoreSettings(_Section):
    url: DbUrl = Field("sqlite:///mlsidecar.sqlite", description="Our own store: SQLite file, or MariaDB/MySQL/PostgreSQL for several processes.")
    password: Secret | None = _secret_field("Password of the store database user.")


class SmtpSettings(_Section):
    host: str = Field("", description="SMTP server; '' disables e-mail.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    security: Literal["starttls", "ssl", "none"] = Field("starttls", description="Transport security.")
    username: str = Field("", description="SMTP login ('' = no authentication).")
    password: Secret | None = _secret_field("SMTP password.")
    from_address: str = Field("", description="Envelope and header sender, e.g. 'school@example.org'.")
    from_name: str = Field("", description="Display name of the sender.")
    timeout_seconds: float = Field(30.0, gt=0, le=300, description="Connect/send timeout.")
    max_per_minute: int = Field(60, ge=1, le=10000, description="Rate limit of outgoing messages.")
    pickup_dir: str = Field("", description="Write each message as an .eml file into this directory instead of sending it (demo, staging); '' = send through host.")

    @property
    def delivers(self) -> bool:
        """Letters go somewhere: through an SMTP server, or as files into the pickup directory."""
        return bool(self.host or self.pickup_dir)

    @model_validator(mode="after")
    def _sender_when_enabled(self) -> SmtpSettings:
        if (self.host or self.pickup_dir) and "@" not in self.from_address:
            raise ValueError("from_address must be an e-mail address when host or pickup_dir is set")
        return self


def _resolve_named_secrets(value: Any, what: str) -> dict[str, Secret]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a table of name = secret reference ({what})")
    resolved = {}
    for name, reference in value.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", str(name)):
            raise ValueError(f"name '{name}' must be 1-64 letters, digits, '_', '-' or '.'")
        secret = resolve_secret(reference)
        if secret is None:
            raise ValueError(f"{what} '{name}' is empty")
        resolved[str(name)] = secret
    return resolved


def _resolve_credentials(value: Any, what: str, field: str, allowed: tuple[str, ...],
                         default: tuple[str, ...], *, rotation: bool = False) -> dict[str, Credential]:
    """``name = "secret"`` (the default scopes) or ``name = { <field> = "secret", scopes = [...] }``.

    A plain string keeps the meaning it had before scopes existed, so old configurations keep working;
    a table says explicitly what the credential may do. With ``rotation``, the table may also hold
    ``previous_<field>``: the value being retired, accepted under the same name (the name owns grants,
    so a rotation must not change it). Every credential must be strong.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a table of name = secret reference ({what})")
    keys = {field, "scopes"} | ({f"previous_{field}"} if rotation else set())
    plain: dict[str, Any] = {}
    retired: dict[str, Any] = {}
    scopes: dict[str, frozenset[str]] = {}
    for name, entry in value.items():
        if isinstance(entry, Mapping):
            unknown = sorted(set(entry) - keys)
            if unknown or field not in entry:
                raise ValueError(f"{what} '{name}': expected {{ {field} = \"secret reference\", scopes = [...] }}"
                                 + (f", not {', '.join(unknown)}" if unknown else f"; '{field}' is missing"))
            wanted = entry.get("scopes", list(default))
            if isinstance(wanted, str) or not isinstance(wanted, list) or not wanted:
                raise ValueError(f"{what} '{name}': scopes must be a non-empty list of {', '.join(allowed)}")
            refused = sorted({str(s) for s in wanted} - set(allowed))
            if refused:
                raise ValueError(f"{what} '{name}': unknown scope(s) {', '.join(refused)}; allowed: {', '.join(allowed)}")
            plain[name], scopes[str(name)] = entry[field], frozenset(str(s) for s in wanted)
            if entry.get(f"previous_{field}"):
                retired[name] = entry[f"previous_{field}"]
        else:
            plain[name], scopes[str(name)] = entry, frozenset(default)
    previous = _resolve_named_secrets(retired, f"previous {what}")
    resolved = {}
    for name, secret in _resolve_named_secrets(plain, what).items():
        check_strength(secret, f"{what} '{name}'")
        check_strength(previous.get(name), f"previous {what} of '{name}'")
        resolved[name] = Credential(secret.reveal(), secret.origin, scopes[name], previous.get(name))
    return resolved


class ProductOverride(_Section):
    term_id: int = Field(gt=0, description="Access level.")
    duration: int = Field(gt=0, description="Duration in units.")
    units: Literal["days", "months"] = Field(description="days | months (years are given as months).")
    product_id: int = Field(gt=0, description="WooCommerce mbl_key product to order for this level and term.")


class AmoCrmSettings(_Section):
    enabled: bool = Field(False, description="Accept amoCRM webhooks at /hooks/amocrm/<path_token>.")
    base_url: str = Field("", description="The account's amoCRM URL, e.g. 'https://school.amocrm.ru'.")
    token: Secret | None = _secret_field("Long-lived amoCRM API token (the old AMO_ACCESS_TOKEN).")
    path_token: Secret | None = _secret_field("Secret path segment of the webhook URL: amoCRM cannot sign, so the URL is the credential." + STRENGTH_NOTE)
    ip_allowlist: list[str] = Field(default_factory=list, description="Optional CIDRs allowed to post (peer address; X-Forwarded-For only through web.trusted_proxies).")
    pipeline_ids: list[int] = Field(default_factory=list, description="Only leads in these pipelines grant ([] = any).")
    status_ids: list[int] = Field(default_factory=list, description="Only leads that reached these statuses grant ([] = any).")
    idempotency: Literal["lead", "lead_status"] = Field("lead", description="One grant per lead, or per lead and status.")
    course_field: str | int = Field("Курс", description="Lead field (name, or numeric field id) holding 'Course name (term_id)'.")
    duration_field: str | int = Field("Срок выдачи", description="Lead field with the duration.")
    units_field: str | int = Field("Тип срока", description="Lead field with the units word.")
    start_date_field: str | int = Field("Дата старта", description="Lead field with the start date (recorded, not used: MemberLux starts access on activation).")
    email_field_code: str | int = Field("EMAIL", description="Contact field code (or id) holding the e-mail.")
    phone_field_code: str | int = Field("PHONE", description="Contact field code (or id) holding the phone.")
    timezone: TimezoneName = Field("", description="Zone of the account's date fields; '' = the site's.")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Timeout of one amoCRM API call.")

    @field_validator("ip_allowlist")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"'{item}' is not an IP address or CIDR network") from None
        return value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> AmoCrmSettings:
        if self.enabled:
            missing = [name for name in ("base_url", "token", "path_token") if not getattr(self, name)]
            if missing:
                raise ValueError("enabled amoCRM intake needs " + ", ".join(missing))
            if not re.match(r"^https?://[^\s/]+", self.base_url):
                raise ValueError("base_url must be an http(s) URL such as 'https://school.amocrm.ru'")
        return self

    @field_validator("path_token")
    @classmethod
    def _strong_path_token(cls, value: Secret | None) -> Secret | None:
        return check_strength(value, "path_token (the only credential of the amoCRM hook)")


_WELCOME_SUBJECT = "Доступ к курсу «{{ level_name }}»"
_WELCOME_BODY = (
    "<p>Здравствуйте{% if first_name %}, {{ first_name }}{% endif %}!</p>\n"
    "<p>Вам открыт доступ к курсу «{{ level_name }}»{% if access_until %} до {{ access_until }} включительно{% endif %}.</p>\n"
    "<p>Ваш логин: <b>{{ login }}</b>. Чтобы задать пароль, откройте <a href=\"{{ reset_url }}\">эту ссылку</a> "
    "и введите свой e-mail.</p>\n"
    "<p>Войти в личный кабинет: <a href=\"{{ site_url }}\">{{ site_url }}</a></p>\n"
)


def _check_template(value: str) -> str:
    from sidecar.mail.templates import TemplateError, check

    try:
        check(value)
    except TemplateError as exc:
        raise ValueError(f"template error at {exc}") from None
    return value


class WelcomeEmailSettings(_Section):
    enabled: bool | None = Field(
        None, description="E-mail users that an order created their login (MemberLux sends them no password). Unset: on "
                          "when e-mail can go out (smtp.host or smtp.pickup_dir), off otherwise.")
    subject: Annotated[str, AfterValidator(_check_template)] = Field(_WELCOME_SUBJECT, description="Jinja2 subject template.")
    body_html: Annotated[str, AfterValidator(_check_template)] = Field(
        _WELCOME_BODY, description="Jinja2 HTML body; variables: first_name, last_name, email, login, level_name, "
                                   "access_until, site_url, reset_url.")
    max_attempts: int = Field(10, ge=1, le=50, description="Sends of one letter before a transient failure (server down, 4xx) makes it 'failed'.")
    retry_base_seconds: int = Field(60, ge=1, le=86400, description="First retry delay after a transient SMTP failure (doubles each time).")
    retry_max_seconds: int = Field(3600, ge=1, le=604800, description="Longest delay between two retries.")

    @model_validator(mode="after")
    def _retry_order(self) -> WelcomeEmailSettings:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("retry_max_seconds must not be smaller than retry_base_seconds")
        return self


class BridgeSettings(_Section):
    hmac_secret: Secret | None = _secret_field("Shared secret of the legacy signed requests (X-MLGB-Signature)." + STRENGTH_NOTE)
    api_keys: dict[str, Secret] = Field(
        default_factory=dict,
        description="Named API keys accepted in X-API-Key: name = 'env:MLS_KEY_CRM' may create grants and enrolments "
                    "(scopes grant, enrol); name = { key = '...', scopes = ['grant'] } names fewer. Each name sees only the "
                    "grants it created, and its Idempotency-Key/external_id values are its own, so rotate under the "
                    "same name: { key = 'new', previous_key = 'old' } accepts both." + STRENGTH_NOTE)
    standard_webhook_secrets: dict[str, Secret] = Field(default_factory=dict, description="Named 'whsec_...' secrets for senders that sign per Standard Webhooks (scope grant); at least 16 bytes after 'whsec_'.")
    max_body_bytes: int = Field(65536, ge=1024, le=10_485_760, description="Largest accepted request body.")
    replay_window_seconds: int = Field(300, ge=30, le=3600, description="Clock skew allowed on signed requests (legacy HMAC and Standard Webhooks, whose library never allows more than 300); a signature is accepted once inside it.")
    concurrency: int = Field(4, ge=1, le=64, description="Orders the worker sends to MemberLux at the same time.")
    retry_base_seconds: int = Field(30, ge=1, le=3600, description="First retry delay after a transient failure (doubles each time, with jitter).")
    retry_max_seconds: int = Field(3600, ge=10, le=86400, description="Longest delay between two retries.")
    give_up_after_hours: int = Field(72, ge=1, le=720, description="A grant still failing transiently after this long is marked failed.")
    settle_seconds: int = Field(
        600, ge=1, le=86400,
        description="After an order call with an unknown outcome (timeout, 5xx/504, connection lost after sending) no new "
                    "order is sent for this long: PHP keeps running after the caller gave up. Set it above the longest a "
                    "request can still run on the site after the call ended (max_execution_time, FPM "
                    "request_terminate_timeout, queueing in FPM); meanwhile the worker looks for the order's traces.")
    unknown_poll_seconds: int = Field(15, ge=1, le=600, description="How often traces of an order with an unknown outcome "
                                                                    "(or a key awaited after an order) are looked for.")
    max_wait_seconds: int = Field(60, ge=0, le=300, description="Cap of ?wait=SECONDS (synchronous answer).")
    same_request_window_seconds: int = Field(
        600, ge=0, le=86400,
        description="A request with no id at all (no Idempotency-Key, external_id or amoCRM lead) that repeats an earlier "
                    "one of the same credential (same e-mail, level, duration and units) within this many seconds gets "
                    "that grant back instead of a second one: a sender's retry after a timeout. 0 grants every such "
                    "request.")
    product_overrides: list[ProductOverride] = Field(default_factory=list, description="Explicit (level, duration, units) -> product_id mappings, checked before product meta.")
    mode: Literal["live", "shadow"] = Field(
        "live",
        description="'live' orders every accepted grant. 'shadow' accepts CRM requests exactly as live (authentication, "
                    "validation, idempotency, the record) but sends no order: the worker watches the WordPress database "
                    "for the key the legacy plugin wrote and records matched, legacy_missing, legacy_different or "
                    "legacy_extra (`mlsidecar shadow report`). Grants accepted in shadow mode are never ordered later.")
    shadow_window_minutes: int = Field(
        60, ge=1, le=10080,
        description="How long after a shadow request the legacy plugin's keys are watched for; the outcome is "
                    "recorded when it has passed.")
    amocrm: AmoCrmSettings = AmoCrmSettings()
    welcome_email: WelcomeEmailSettings = WelcomeEmailSettings()

    @field_validator("api_keys", mode="before")
    @classmethod
    def _resolve_keys(cls, value: Any) -> Any:
        # Before scopes, a bridge key could create grants and enrol (docs/security.md said so): a plain key still may.
        return _resolve_credentials(value, "api key", "key", ("grant", "enrol"), ("grant", "enrol"), rotation=True)

    @field_validator("standard_webhook_secrets", mode="before")
    @classmethod
    def _resolve_webhook_secrets(cls, value: Any) -> Any:
        secrets = _resolve_named_secrets(value, "standard webhook secret")
        for name, secret in secrets.items():
            check_signing_key(secret, f"standard webhook secret '{name}'")
        return secrets

    @field_validator("hmac_secret")
    @classmethod
    def _strong_hmac(cls, value: Secret | None) -> Secret | None:
        return check_strength(value, "hmac_secret")

    @model_validator(mode="after")
    def _retry_order(self) -> BridgeSettings:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("retry_max_seconds must not be smaller than retry_base_seconds")
        return self


class ScheduleSettings(_Section):
    timezone: ScheduleZone = Field("site", description="Zone of the daily times below: 'site' (from WordPress) or an IANA name.")
    reminders_at: time = Field(time(9, 0), description="Daily time of the reminders run, 'HH:MM'.")
    certificate_poll_seconds: int = Field(60, ge=5, le=3600, description="How often new certificates are looked for.")
    outbox_poll_seconds: int = Field(5, ge=1, le=600, description="How often the outbox worker looks for due work.")
    access_scan_seconds: int = Field(60, ge=10, le=3600, description="How often keys activated since the last look are searched for (access.activated events; only while an endpoint wants them).")
    sleepers_scan_seconds: int = Field(30, ge=5, le=3600, description="How often the sleepers read model takes in the site's changes (keys, users, certificates, the UTC day rolling over): a report at most about twice this old.")
    sleepers_max_age_minutes: int = Field(1440, ge=5, le=1440, description="The whole sleepers read model is rebuilt when its last full rebuild is older than this; the rebuild reports what the change scans missed.")
    dashboard_interval_minutes: int = Field(60, ge=5, le=1440, description="How often the worker computes the dashboard's \"what happened after each letter\" (every outcome window, all levels), also once when it starts; the page shows the last result.")


def _check_renewal_url(value: str) -> str:
    from sidecar.reminders.letters import RENEWAL_URL_VARIABLES, TemplateError, check

    try:
        check(value, RENEWAL_URL_VARIABLES)
    except TemplateError as exc:
        raise ValueError(f"template error at {exc}") from None
    return value


class ReminderSettings(_Section):
    enabled: bool = Field(True, description="Run the daily reminders job (levels still need monitoring switched on and letters set).")
    dry_run: bool = Field(False, description="The daily job plans and logs what it would send, and sends nothing.")
    catch_up_days: int = Field(7, ge=0, le=365, description="A step more than this many days past its due day is not sent (no mail about old expiries).")
    max_attempts: int = Field(6, ge=1, le=50, description="Sends of one letter before a transient failure becomes 'failed'.")
    retry_base_seconds: int = Field(300, ge=10, le=86400, description="First retry delay after a transient SMTP failure (doubles each time).")
    retry_max_seconds: int = Field(21600, ge=10, le=604800, description="Longest delay between two retries.")
    sending_lease_seconds: int = Field(900, ge=60, le=86400, description="A letter still 'sending' after this long was interrupted: planned again if it never reached the DATA phase, else 'unknown' (never re-sent automatically).")
    unknown_hold_days: int = Field(3, ge=0, le=365, description="Days a letter with an unknown outcome holds the next letters of its chain, waiting for an administrator to mark it delivered or send it again; then it counts as delivered for the order of the chain.")
    renewal_url: Annotated[str, AfterValidator(_check_renewal_url)] = Field("", description="Default renewal link template (Jinja2, e.g. 'https://school.example/product/{{ product_id }}'); '' = the level's WooCommerce key product page, else the site.")
    reply_to: str = Field("", description="Reply-To of reminder letters ('' = none).")
    language: Literal["ru", "en"] = Field("ru", description="Language of the parts we write ourselves: digest table, unsubscribe page and footer.")

    @model_validator(mode="after")
    def _retry_order(self) -> ReminderSettings:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("retry_max_seconds must not be smaller than retry_base_seconds")
        return self


ADDRESS_PATTERN = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


def _check_address(value: str) -> str:
    value = value.strip()
    if value and not ADDRESS_PATTERN.match(value):
        raise ValueError("expected one e-mail address such as 'admin@school.example' (a mailing list or alias reaches "
                         "several people), or '' for the default")
    return value


class AlertSettings(_Section):
    enabled: bool = Field(True, description="Mail a digest about grants that failed or whose outcome is still unknown past "
                                            "their settle time; false = they show only on the first page, in doctor and "
                                            "as webhook events (grant.failed, grant.unsettled).")
    to: Annotated[str, AfterValidator(_check_address)] = Field(
        "", description="Recipient of the digest (one address); '' = the administrator address of the reminders' digests, "
                        "when the levels with monitoring on name exactly one.")
    digest_interval_minutes: int = Field(60, ge=5, le=1440, description="At most one digest per this many minutes; "
                                                                        "alerts found meanwhile wait for the next one.")
    language: Literal["", "ru", "en"] = Field("", description="Language of the digest; '' = reminders.language when the "
                                                              "configuration sets it, else English.")


WEBHOOK_EVENTS = ("grant.accepted", "grant.succeeded", "grant.duplicated", "grant.failed", "grant.unsettled",
                  "program.step_granted", "program.completed", "reminder.sent", "reminder.failed", "sleeper.detected",
                  "access.activated", "access.expired", "certificate.issued")


class WebhookEndpointSettings(_Section):
    name: str = Field(min_length=1, max_length=100, description="Unique name of the endpoint (shown in the UI and logs).")
    url: str = Field(description="https:// URL that receives the events (http:// only for allowed private hosts).")
    events: list[str] = Field(default_factory=lambda: ["*"], description="Event types to send, or ['*'] for all.")
    secret: Secret | None = _secret_field("Signing secret 'whsec_…' (Standard Webhooks); '' = generated and shown in the UI.")
    previous_secret: Secret | None = _secret_field("The secret being rotated out; still signs until previous_secret_valid_until.")
    previous_secret_valid_until: datetime | None = Field(None, description="End of the rotation grace period (ISO date-time, UTC).")
    enabled: bool = Field(True, description="Send events to this endpoint.")
    description: str = Field("", max_length=300, description="What the endpoint is for.")
    body_template: str = Field("", max_length=10000, description="'' = the standard signed JSON event; else a JSON document whose strings are Jinja2 templates of the event (e.g. a Telegram sendMessage body; docs/webhooks.md).")

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v != "*" and v not in WEBHOOK_EVENTS]
        if unknown:
            raise ValueError(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(WEBHOOK_EVENTS)}")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http(s):// URL")
        return value

    @field_validator("secret", "previous_secret")
    @classmethod
    def _whsec(cls, value: Secret | None) -> Secret | None:
        return value if value is None else check_signing_key(value, "a signing secret")

    @model_validator(mode="after")
    def _usable_template(self) -> WebhookEndpointSettings:
        if self.body_template.strip():
            from sidecar.webhooks.templates import BodyTemplateError, check

            try:
                check(self.body_template, self.events)
            except BodyTemplateError as exc:
                raise ValueError(f"body_template: {exc}") from None
        return self


class WebhookSettings(_Section):
    endpoints: list[WebhookEndpointSettings] = Field(default_factory=list, description="Endpoints defined here (more can be added in the UI).")
    timeout_seconds: float = Field(10.0, gt=0, le=60, description="Timeout of one delivery attempt.")
    disable_after_failures: int = Field(20, ge=1, le=1000, description="An endpoint is switched off after this many deliveries in a row failed for good.")
    allow_private_destinations: list[str] = Field(default_factory=list, description="Host names or CIDRs (e.g. '10.0.0.0/8') that may be private; everything private/loopback/link-local is refused otherwise.")
    memberlux_path_token: Secret | None = _secret_field("Secret path segment of /hooks/memberlux/<token> (MemberLux cannot sign its webhooks)." + STRENGTH_NOTE)

    @field_validator("memberlux_path_token")
    @classmethod
    def _strong_path_token(cls, value: Secret | None) -> Secret | None:
        return check_strength(value, "memberlux_path_token")

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, value: list[WebhookEndpointSettings]) -> list[WebhookEndpointSettings]:
        names = [e.name for e in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"endpoint names must be unique: {', '.join(duplicates)}")
        return value


class WebSettings(_Section):
    host: str = Field("127.0.0.1", description="Listen address of `mlsidecar serve`.")
    port: int = Field(8080, ge=1, le=65535, description="Listen port.")
    workers: int = Field(2, ge=1, le=64, description="gunicorn worker processes.")
    public_url: str = Field("", description="URL under which people and CRMs reach the sidecar (links in e-mails).")
    secret_key: Secret | None = _secret_field("Signs sessions and unsubscribe links; required outside the demo." + STRENGTH_NOTE)
    trusted_proxies: int = Field(0, ge=0, le=5, description="Number of reverse proxies whose X-Forwarded-* headers are trusted.")
    trusted_proxy_networks: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"], description="Addresses or CIDRs of those proxies: X-Forwarded-* headers count only on connections from them (e.g. '172.16.0.0/12' for a proxy in another container); a client that connects directly keeps its own address.")
    api_tokens: dict[str, Secret] = Field(
        default_factory=dict,
        description="Named bearer tokens, separate from the bridge's keys. name = 'env:MLS_TOKEN' is read-only (scope read: "
                    "/api/v1/sleepers, /metrics, enrolment status); name = { token = '...', scopes = ['read', 'enrol'] } "
                    "may also enrol learners in programs (POST /api/v1/programs/<id>/enrolments)." + STRENGTH_NOTE)
    metrics_open: bool = Field(False, description="Serve /metrics without a token (for a scraper on a private network).")
    sleepers_order: Annotated[str, AfterValidator(_check_sleepers_order)] = Field(
        "expired_on desc", description="Order of the sleepers list when none is asked for (page, CSV, /api/v1/sleepers, "
                                       "`mlsidecar sleepers list`): '<column> asc|desc' with a column of expired_on, "
                                       "days_since, name, email, level. The default lists the most recent expiries first.")

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _resolve_tokens(cls, value: Any) -> Any:
        # Least privilege: a plain token reads, as it always did; enrolling must be asked for by name.
        return _resolve_credentials(value, "API token", "token", ("read", "enrol"), ("read",))

    @field_validator("secret_key")
    @classmethod
    def _strong_key(cls, value: Secret | None) -> Secret | None:
        return check_strength(value, "secret_key")

    @field_validator("trusted_proxy_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value


class LogSettings(_Section):
    format: Literal["text", "json"] = Field("text", description="Log line format.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Minimum level.")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    wordpress: WordPressSettings
    memberlux: MemberLuxSettings
    store: StoreSettings = StoreSettings()
    smtp: SmtpSettings = SmtpSettings()
    bridge: BridgeSettings = BridgeSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    reminders: ReminderSettings = ReminderSettings()
    alerts: AlertSettings = AlertSettings()
    webhooks: WebhookSettings = WebhookSettings()
    web: WebSettings = WebSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="before")
    @classmethod
    def _welcome_email_follows_mail(cls, data: Any) -> Any:
        """``bridge.welcome_email.enabled`` left unset is on exactly when letters can go out: a learner the
        bridge's order created must learn how to log in, and MemberLux tells them nothing."""
        if not isinstance(data, Mapping):
            return data
        bridge, smtp = data.get("bridge", {}), data.get("smtp", {})
        if not isinstance(bridge, Mapping) or not isinstance(smtp, Mapping):
            return data                     # the sections' own validation names the problem
        welcome = bridge.get("welcome_email", {})
        if not isinstance(welcome, Mapping) or welcome.get("enabled") is not None:
            return data
        mail_goes_out = bool(smtp.get("host") or smtp.get("pickup_dir"))
        return {**data, "bridge": {**bridge, "welcome_email": {**welcome, "enabled": mail_goes_out}}}


# --- loading ---------------------------------------------------------------------------------

def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Copy of ``data`` with ``MLS_SECTION__KEY`` variables applied; unknown sections are errors."""
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    problems = []
    sections = set(Settings.model_fields)
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if path[0] not in sections or len(path) < 2 or not all(path):
            problems.append(f"{name}: unknown setting (expected MLS_<SECTION>__<KEY> with a section of {sorted(sections)})")
            continue
        node = merged.setdefault(path[0], {})
        for part in path[1:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw)
    if problems:
        raise ConfigError(problems, "environment")
    return merged


def _describe(value: Any) -> str:
    text = re.sub(r"(://[^/:@\s]*:)[^/@\s]+@", r"\1***@", repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _format_errors(error: ValidationError, secret_paths: set[str]) -> list[str]:
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
            continue
        if item["type"] == "missing":
            lines.append(f"{path}: required key is missing")
            continue
        shown = "<secret>" if any(path.startswith(p) for p in secret_paths) else _describe(item.get("input"))
        lines.append(f"{path} = {shown}: {message}")
    return lines


def _secret_paths() -> set[str]:
    paths = set()
    for section_name, section_field in Settings.model_fields.items():
        model = section_field.annotation
        for name, field in getattr(model, "model_fields", {}).items():
            if (field.json_schema_extra or {}).get("secret") or name in ("api_keys", "standard_webhook_secrets", "amocrm", "api_tokens"):
                paths.add(f"{section_name}.{name}")
    return paths


def settings_from_mapping(data: Mapping[str, Any], *, environ: Mapping[str, str] | None = None,
                          source: str = "configuration") -> Settings:
    merged = apply_env_overrides(dict(data), os.environ if environ is None else environ)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, _secret_paths()), source) from None


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    raise ConfigError([f"no configuration file: pass --config, set {CONFIG_ENV}, or create "
                       + " or ".join(str(p) for p in DEFAULT_CONFIG_PATHS)
                       + " (start from config.example.toml)"])


def load_settings(path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None) -> Settings:
    file = find_config_file(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read {file}: {exc.strerror or exc}"], str(file)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{file} is not UTF-8 text"], str(file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax: {exc}"], str(file)) from None
    return settings_from_mapping(data, environ=environ, source=str(file))


def with_password(url: str, password: Secret | None) -> str:
    """The URL with the password filled in, for the engine only (never log the result)."""
    if password is None:
        return url
    from sqlalchemy import make_url

    return make_url(url).set(password=password.reveal()).render_as_string(hide_password=False)


def describe_settings(settings: Settings) -> dict[str, Any]:
    """A JSON-safe view with secrets replaced by where they come from."""

    def clean(value: Any) -> Any:
        if isinstance(value, Credential):
            return f"<secret from {value.origin.split(':')[0]}> scopes: {', '.join(sorted(value.scopes))}"
        if isinstance(value, Secret):
            return f"<secret from {value.origin.split(':')[0]}>"
        if isinstance(value, BaseModel):
            return {k: clean(getattr(value, k)) for k in type(value).model_fields}
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, time):
            return value.strftime("%H:%M")
        return value

    return clean(settings)
