"""Deterministic generator of a realistic WordPress + MemberLux site.

``seed_site`` fills an empty site (schema from :mod:`sidecar.devstack.wpschema`) with everything the
sidecar reads: options, staff and learners, access levels with their settings, unused and activated
keys with the messy histories real sites accumulate (``memberlux/core.md`` sections 3 and 10),
``keys_meta``, certificates, WooCommerce ``mbl_key`` products, webhook subscriptions, and the state of
the legacy programs and learning-monitor plugins (``memberlux/legacy-plugins.md`` 2.1 and 3.1).

Determinism: every value comes from ``random.Random(seed)`` and ``today``; row ids are assigned
explicitly (or by insert order), so the same ``(seed, today)`` writes byte-identical rows. Password
hashes use salts drawn from the same generator for that reason.

Speed: rows are generated one learner at a time and written with driver-level ``executemany`` in
chunks, so memory stays flat and a 200k-user / 1M-key site builds in minutes on MariaDB.

E-mail addresses use reserved domains only (``example.com`` and friends, RFC 2606), so a demo
mailer pointed at this data can never reach a real person.
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import hmac
import math
import random
import string
import time
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import bcrypt
import phpserialize
import sqlalchemy as sa

from sidecar.devstack.phpdate import add_duration
from sidecar.devstack.wpschema import ZERO_DATE, create_site_schema

__all__ = [
    "DEMO_ADMIN_LOGIN",
    "DEMO_ADMIN_PASSWORD",
    "DEMO_API_LOGIN",
    "DEMO_APP_PASSWORD",
    "DEMO_COACH_LOGIN",
    "DEMO_LEARNER_PASSWORD",
    "UNUSED_KEYS_PER_LEVEL",
    "SeedProduct",
    "SeedSummary",
    "seed_site",
    "php_serialize",
    "php_unserialize",
    "wp_password_hash",
    "generate_key_code",
]

DEMO_ADMIN_LOGIN = "admin"
DEMO_ADMIN_PASSWORD = "demo-admin-2026"
#: Dedicated REST account (core.md 5.1 recommends one); administrator role.
DEMO_API_LOGIN = "sidecar"
#: Application Password of the REST account, in WordPress's 6 x 4 display form (spaces are ignored).
DEMO_APP_PASSWORD = "demo side car0 2026 appp wd00"
DEMO_COACH_LOGIN = "coach"
DEMO_COACH_PASSWORD = "demo-coach-2026"
#: Every learner's password (stored under several hash formats, see ``_LEARNER_HASHES``).
DEMO_LEARNER_PASSWORD = "demo-learner-2026"

UNUSED_KEYS_PER_LEVEL = 500
SITE_URL = "https://school.example"
#: Port 9 (discard) refuses connections at once, so the seeded webhook never stalls an order.
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:9/crm/memberlux-hook"
#: Where the legacy bundle plugin's first program posts its notices (a CRM that is not there: port 9).
DEFAULT_PROGRAM_WEBHOOK_URL = "http://127.0.0.1:9/program-hook"

ADMIN_ID, API_USER_ID, COACH_ID = 1, 2, 3
FIRST_LEARNER_ID = 4

# Precomputed hashes of DEMO_LEARNER_PASSWORD: bcrypt is far too slow to run per learner. A real
# site holds a mix of formats because hashes are upgraded only at login (core.md 12).
_LEARNER_HASH_WP_BCRYPT = "$wp$2y$10$fc1wGOOTf0Apbi8OuAQmNegJvi/2U0vCbqu6JHcmpvpRMaexMZhju"
_LEARNER_HASH_PHPASS = "$P$BZKOdZKOdWeMuUHFJ3sjVxVpnyA7mF0"
_LEARNER_HASH_MD5 = "204e6a06392657664c2b14a9db6b1ff3"

_ALNUM = string.ascii_letters + string.digits
_BCRYPT_ALPHABET = "./" + string.ascii_uppercase + string.ascii_lowercase + string.digits

ProgressCallback = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------------
# Public value helpers


def php_serialize(value: object) -> str:
    """PHP ``serialize()`` of a Python value (dicts keep insertion order), as text."""
    return phpserialize.dumps(value).decode("utf-8")


def php_unserialize(text: str) -> object:
    return phpserialize.loads(text.encode("utf-8"), decode_strings=True)


def wp_password_hash(password: str, *, rng: random.Random | None = None, rounds: int = 10) -> str:
    """WordPress 6.8 password hash: ``$wp`` + bcrypt over base64(HMAC-SHA384(key 'wp-sha384')).

    WordPress trims the password first. PHP writes the ``$2y$`` variant, identical to ``$2b$``.
    With ``rng`` the salt is drawn from it, so seeded data stays reproducible.
    """
    prehash = base64.b64encode(hmac.new(b"wp-sha384", password.strip().encode("utf-8"), hashlib.sha384).digest())
    if rng is None:
        salt = bcrypt.gensalt(rounds)
    else:
        # 22 characters carry 128 bits: the last one may only use its top two bits.
        chars = "".join(rng.choice(_BCRYPT_ALPHABET) for _ in range(21)) + rng.choice(".Oeu")
        salt = f"$2b${rounds:02d}${chars}".encode()
    hashed = _bcrypt(prehash, salt).decode("ascii")
    return "$wp$2y$" + hashed[4:]


@functools.lru_cache(maxsize=1024)
def _bcrypt(prehash: bytes, salt: bytes) -> bytes:
    """bcrypt is a pure function of password and salt: a site seeded again with the same seed draws the
    same salts, and its hashes need not be worked out again (each costs ~50 ms of CPU)."""
    return bcrypt.hashpw(prehash, salt)


def generate_key_code(rng: random.Random, unix_time: int) -> str:
    """A 72-character code the way MemberLux makes it (core.md 3.1).

    A random permutation of the 62 ASCII letters and digits plus the 10 digits of the Unix time.
    """
    chars = list(_ALNUM + str(unix_time))
    rng.shuffle(chars)
    return "".join(chars)


# --------------------------------------------------------------------------------------------------
# Summary


@dataclass(frozen=True)
class SeedProduct:
    product_id: int
    level_id: int
    duration: int
    units: str
    is_unlimited: bool
    price: int
    status: str = "publish"
    product_type: str = "mbl_key"


@dataclass
class SeedSummary:
    users: int = 0
    learners: int = 0
    blocked_users: int = 0
    levels: int = 0
    level_ids: list[int] = field(default_factory=list)
    parent_of: dict[int, int] = field(default_factory=dict)
    auto_certificate_levels: list[int] = field(default_factory=list)
    manual_certificate_levels: list[int] = field(default_factory=list)
    no_certificate_levels: list[int] = field(default_factory=list)
    deleted_level_id: int | None = None
    keys: int = 0
    unused_keys: int = 0
    activated_keys: int = 0
    keys_meta: int = 0
    certificates: int = 0
    auto_certificates: int = 0
    manual_certificates: int = 0
    products: list[SeedProduct] = field(default_factory=list)
    program_ids: list[int] = field(default_factory=list)
    enrolled_users: int = 0
    usermeta: int = 0
    admin_id: int = ADMIN_ID
    admin_login: str = DEMO_ADMIN_LOGIN
    admin_password: str = DEMO_ADMIN_PASSWORD
    api_user_id: int = API_USER_ID
    api_login: str = DEMO_API_LOGIN
    api_app_password: str = DEMO_APP_PASSWORD
    coach_id: int = COACH_ID
    coach_login: str = DEMO_COACH_LOGIN
    learner_password: str = DEMO_LEARNER_PASSWORD
    webhook_url: str = DEFAULT_WEBHOOK_URL
    #: Module tables the site lacks (``create_site_schema(without_modules=...)``); nothing was written there.
    skipped_tables: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def product_for(self, level_id: int, duration: int, units: str = "months", *,
                    unlimited: bool = False) -> SeedProduct:
        """The published ``mbl_key`` product for a level and term (``KeyError`` if none)."""
        for product in self.products:
            if (product.level_id == level_id and product.duration == duration and product.units == units
                    and product.is_unlimited == unlimited and product.status == "publish"
                    and product.product_type == "mbl_key"):
                return product
        raise KeyError((level_id, duration, units, unlimited))


# --------------------------------------------------------------------------------------------------
# Names and texts

_RU_MALE = ["Александр", "Дмитрий", "Максим", "Сергей", "Андрей", "Алексей", "Артём", "Илья", "Кирилл",
            "Михаил", "Никита", "Матвей", "Роман", "Егор", "Иван", "Павел", "Владимир", "Николай", "Олег",
            "Юрий", "Григорий", "Степан", "Тимофей", "Фёдор"]
_RU_FEMALE = ["Анна", "Мария", "Елена", "Ольга", "Наталья", "Татьяна", "Екатерина", "Ирина", "Светлана",
              "Юлия", "Анастасия", "Дарья", "Полина", "Ксения", "Виктория", "Алина", "Марина", "Людмила",
              "Вера", "Софья", "Алёна", "Евгения", "Надежда", "Валерия"]
_RU_LAST = ["Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов",
            "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров",
            "Павлов", "Козлов", "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин",
            "Захаров", "Зайцев", "Соловьёв", "Борисов", "Яковлев", "Григорьев", "Романов", "Воробьёв"]
_RU_FATHERS = [("Александрович", "Александровна"), ("Сергеевич", "Сергеевна"), ("Андреевич", "Андреевна"),
               ("Алексеевич", "Алексеевна"), ("Дмитриевич", "Дмитриевна"), ("Иванович", "Ивановна"),
               ("Михайлович", "Михайловна"), ("Николаевич", "Николаевна"), ("Петрович", "Петровна"),
               ("Владимирович", "Владимировна"), ("Юрьевич", "Юрьевна"), ("Олегович", "Олеговна")]
_EN_FIRST = ["James", "Emma", "Liam", "Olivia", "Noah", "Ava", "Lucas", "Mia", "Ethan", "Sophia", "Mason",
             "Isabella", "Logan", "Charlotte", "Daniel", "Amelia", "Henry", "Harper", "Jack", "Evelyn",
             "Leo", "Chloe", "Adam", "Nora"]
_EN_LAST = ["Smith", "Johnson", "Brown", "Miller", "Davis", "Garcia", "Wilson", "Taylor", "Anderson",
            "Thomas", "Moore", "Martin", "Lee", "Clark", "Walker", "Young", "King", "Wright", "Scott",
            "Green", "Baker", "Hill", "Turner", "Cooper"]
_EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example", "inbox.example"]

_COURSES = ["Английский с нуля", "Английский для путешествий", "Бизнес-английский", "Йога для начинающих",
            "Фотография: основы", "Python для аналитиков", "Excel продвинутый", "Маркетинг в соцсетях",
            "Копирайтинг", "Личные финансы", "Рисование акварелью", "Гитара за 30 дней", "Тайм-менеджмент",
            "Публичные выступления", "Дизайн интерьера", "Психология общения", "SMM-менеджер",
            "Figma для новичков", "Data Science Intro", "Project Management Basics", "Speed Reading",
            "Photoshop Masterclass", "Вокал", "Нутрициология", "Испанский A1", "Немецкий A1",
            "Скорочтение для детей", "Веб-дизайн", "Основы бухгалтерии", "Вязание крючком"]

_TRANSLIT = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
                     ["a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o", "p",
                      "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "yu", "ya"], strict=True))


def _translit(text: str) -> str:
    out = []
    for ch in text.lower():
        if ch in _TRANSLIT:
            out.append(_TRANSLIT[ch])
        elif ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append("-")
    return "-".join(part for part in "".join(out).split("-") if part)


# Sources of activation (core.md 6.2) with the weights used for normal-path activations.
_NORMAL_SOURCES = [("purchase", 44), ("activation_page", 20), ("profile_page_self", 4),
                   ("profile_page_admin", 8), ("bulk_operations_add", 7), ("free_item", 3), ("", 9)]
_REGISTRATION_SOURCES = [("free_registration_form", 60), ("auto_registration", 40)]
_UTM_SOURCES = ["instagram", "vk", "telegram", "newsletter", "youtube", "partner"]
_UTM_MEDIUMS = ["cpc", "social", "email", "referral", "stories"]

# How a (learner, level) history unfolds; weights tuned so a typical history yields ~1.7 keys.
_SCENARIOS = [("single", 30), ("stacked", 14), ("lapse", 10), ("unlimited", 5), ("banned", 4),
              ("basket", 3), ("registration", 8), ("duration0", 1), ("days", 8)]
_MONTH_TERMS = [(1, 25), (3, 25), (6, 15), (12, 35)]
_DAY_TERMS = [(7, 20), (14, 25), (30, 35), (45, 10), (90, 10)]

_ADMIN_CAPS = [
    "switch_themes", "edit_themes", "activate_plugins", "edit_plugins", "edit_users", "edit_files",
    "manage_options", "moderate_comments", "manage_categories", "manage_links", "upload_files", "import",
    "unfiltered_html", "edit_posts", "edit_others_posts", "edit_published_posts", "publish_posts",
    "edit_pages", "read", "level_10", "level_9", "level_8", "level_7", "level_6", "level_5", "level_4",
    "level_3", "level_2", "level_1", "level_0", "edit_others_pages", "edit_published_pages",
    "publish_pages", "delete_pages", "delete_others_pages", "delete_published_pages", "delete_posts",
    "delete_others_posts", "delete_published_posts", "delete_private_posts", "edit_private_posts",
    "read_private_posts", "delete_private_pages", "edit_private_pages", "read_private_pages",
    "delete_users", "create_users", "unfiltered_upload", "edit_dashboard", "update_plugins",
    "delete_plugins", "install_plugins", "update_themes", "install_themes", "update_core", "list_users",
    "remove_users", "promote_users", "edit_theme_options", "delete_themes", "export",
    "manage_woocommerce", "view_woocommerce_reports", "certificate-delivery",
]


def _user_roles() -> dict:
    def role(name: str, caps: Sequence[str]) -> dict:
        return {"name": name, "capabilities": dict.fromkeys(caps, True)}

    return {
        "administrator": role("Administrator", _ADMIN_CAPS),
        "editor": role("Editor", ["moderate_comments", "manage_categories", "upload_files", "unfiltered_html",
                                  "edit_posts", "edit_others_posts", "edit_published_posts", "publish_posts",
                                  "edit_pages", "read", "level_7", "level_1", "level_0"]),
        "author": role("Author", ["upload_files", "edit_posts", "edit_published_posts", "publish_posts",
                                  "read", "level_2", "level_1", "level_0", "delete_posts"]),
        "contributor": role("Contributor", ["edit_posts", "read", "level_1", "level_0", "delete_posts"]),
        "subscriber": role("Subscriber", ["read", "level_0"]),
        "customer": role("Customer", ["read"]),
        "shop_manager": role("Shop manager", ["read", "edit_posts", "manage_woocommerce",
                                              "view_woocommerce_reports", "list_users", "edit_users"]),
        "coach": role("Тренер", ["read", "level_0", "certificate-delivery"]),
    }


def _weighted(pairs: Sequence[tuple[object, int]]) -> tuple[list, list[float]]:
    values = [value for value, _ in pairs]
    cumulative, total = [], 0
    for _, weight in pairs:
        total += weight
        cumulative.append(total)
    return values, [c / total for c in cumulative]


class _Picker:
    """Fast weighted choice (``random.choices`` re-validates its arguments on every call)."""

    __slots__ = ("values", "cum")

    def __init__(self, pairs: Sequence[tuple[object, int]]):
        self.values, self.cum = _weighted(pairs)

    def __call__(self, rng: random.Random):
        return self.values[bisect.bisect_left(self.cum, rng.random())]


# --------------------------------------------------------------------------------------------------
# Bulk writer


class _Bulk:
    """Buffers rows per table and writes them with the driver's ``executemany`` in chunks."""

    def __init__(self, conn: sa.Connection, chunk: int, existing: set[str]):
        self.conn = conn
        self.chunk = chunk
        self.existing = existing
        #: Tables of modules the site does not have: their rows are dropped, as the module never ran.
        self.skipped: set[str] = set()
        self.buffers: dict[str, list[tuple]] = {}
        self.sql: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._since_commit = 0
        paramstyle = conn.dialect.paramstyle
        self.placeholder = "?" if paramstyle == "qmark" else "%s"
        self.quote = conn.dialect.identifier_preparer.quote

    def table(self, name: str, columns: Sequence[str]) -> None:
        if name not in self.existing:
            self.skipped.add(name)
            return
        cols = ", ".join(self.quote(c) for c in columns)
        marks = ", ".join([self.placeholder] * len(columns))
        self.sql[name] = f"INSERT INTO {self.quote(name)} ({cols}) VALUES ({marks})"
        self.buffers[name] = []
        self.counts.setdefault(name, 0)

    def add(self, name: str, row: tuple) -> None:
        if name in self.skipped:
            return
        buf = self.buffers[name]
        buf.append(row)
        if len(buf) >= self.chunk:
            self.flush(name)

    def flush(self, name: str) -> None:
        buf = self.buffers[name]
        if not buf:
            return
        self.conn.exec_driver_sql(self.sql[name], buf)
        self.counts[name] += len(buf)
        self._since_commit += len(buf)
        self.buffers[name] = []
        # Commit now and then so MariaDB's undo log stays small on million-row builds.
        if self._since_commit >= 100_000:
            self.conn.commit()
            self._since_commit = 0

    def flush_all(self) -> None:
        for name in list(self.buffers):
            self.flush(name)


# --------------------------------------------------------------------------------------------------
# Generation


class _Key:
    __slots__ = ("term", "duration", "units", "unlimited", "start", "end", "registered", "activated",
                 "source", "banned", "basket", "sent", "status", "utm")

    def __init__(self, term: int, duration: int, units: str, unlimited: bool, start: date, end: date,
                 registered: date | None, activated: datetime, source: str):
        self.term = term
        self.duration = duration
        self.units = units
        self.unlimited = unlimited
        self.start = start
        self.end = end
        self.registered = registered
        self.activated = activated
        self.source = source
        self.banned = False
        self.basket = False
        self.sent = 0
        self.status = "used"
        self.utm: tuple | None = None


class _Cert:
    __slots__ = ("level", "date_issue", "create_date", "responsible", "auto", "cert_id", "advances_program")

    def __init__(self, level: int, date_issue: date, create_date: date, responsible: int, auto: bool):
        self.level = level
        self.date_issue = date_issue
        self.create_date = create_date
        self.responsible = responsible
        self.auto = auto
        self.cert_id = 0
        self.advances_program = False


@dataclass
class _Level:
    term_id: int
    name: str
    slug: str
    parent: int
    created: date
    cert_mode: str  # "auto" | "employee" | "implicit" (has certificate, no how-to meta) | "none"
    series: str = ""
    custom_fields: str = ""


@dataclass
class _Program:
    post_id: int
    title: str
    steps: list[tuple[int, int, str]]


class _SiteBuilder:
    def __init__(self, conn: sa.Connection, *, users: int, levels: int, seed: int, today: date, prefix: str,
                 base_prefix: str, timezone_string: str, webhook_url: str, progress: ProgressCallback | None,
                 program_webhook_url: str = DEFAULT_PROGRAM_WEBHOOK_URL,
                 chunk: int):
        self.rng = random.Random(seed)
        self.today = today
        self.prefix = prefix
        self.base = base_prefix
        self.n_learners = users
        self.n_levels = levels
        self.tz = zoneinfo.ZoneInfo(timezone_string)
        self.timezone_string = timezone_string
        self.webhook_url = webhook_url
        self.program_webhook_url = program_webhook_url
        self.progress = progress
        self.bulk = _Bulk(conn, chunk, set(sa.inspect(conn).get_table_names()))
        self.summary = SeedSummary(webhook_url=webhook_url)
        self.site_start = today - timedelta(days=6 * 365)
        # keys_meta appeared with a later MemberLux update: older activations have no row (core.md 1.4).
        self.keys_meta_since = self.site_start + timedelta(days=540)
        self.next_key_id = 1
        self.next_cert_id = 1
        self.levels: list[_Level] = []
        self.programs: list[_Program] = []
        self.caps_key = f"{prefix}capabilities"
        self.level_key = f"{prefix}user_level"
        self._declare_tables()

    # -- plumbing ---------------------------------------------------------------------------------

    def _declare_tables(self) -> None:
        p, b = self.prefix, self.base
        t = self.bulk.table
        t(f"{b}users", ["ID", "user_login", "user_pass", "user_nicename", "user_email", "user_url",
                        "user_registered", "user_activation_key", "user_status", "display_name"])
        t(f"{b}usermeta", ["user_id", "meta_key", "meta_value"])
        t(f"{p}options", ["option_name", "option_value", "autoload"])
        t(f"{p}terms", ["term_id", "name", "slug", "term_group"])
        t(f"{p}term_taxonomy", ["term_taxonomy_id", "term_id", "taxonomy", "description", "parent", "count",
                                "custom_order"])
        t(f"{p}termmeta", ["term_id", "meta_key", "meta_value"])
        t(f"{p}term_relationships", ["object_id", "term_taxonomy_id", "term_order"])
        t(f"{p}posts", ["ID", "post_author", "post_date", "post_date_gmt", "post_content", "post_title",
                        "post_excerpt", "post_status", "post_name", "post_modified", "post_modified_gmt",
                        "post_parent", "guid", "post_type"])
        t(f"{p}postmeta", ["post_id", "meta_key", "meta_value"])
        t(f"{p}memberlux_term_keys", ["id", "term_id", "user_id", "key", "key_type", "status", "sent",
                                      "is_banned", "duration", "units", "date_start", "date_end",
                                      "date_registered", "is_unlimited"])
        t(f"{p}memberlux_keys_meta", ["key_id", "activation_datetime", "source", "utm_source", "utm_medium",
                                      "utm_campaign", "utm_id", "utm_term", "utm_content"])
        t(f"{p}memberlux_hook", ["id", "destination", "sort", "created_at", "active"])
        t(f"{p}memberlux_hook_action", ["hook_id", "action"])
        t(f"{p}memberlux_certificate", ["certificate_id", "user_id", "wpmlevel_id", "certificate_name",
                                        "certificate_template_id", "graduate_first_name",
                                        "graduate_last_name", "graduate_surname", "date_issue", "series",
                                        "number", "responsible_person", "create_date", "course_name",
                                        "custom_fields"])
        t(f"{p}memberlux_certificate_templates", ["certificate_template_id", "name", "content", "orientation"])

    def _tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def _local(self, moment: datetime) -> str:
        return moment.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S")

    @staticmethod
    def _utc(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    def _moment(self, day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(
            seconds=self.rng.randrange(7 * 3600, 23 * 3600))

    def _day_between(self, first: date, last: date) -> date:
        if last <= first:
            return first
        return first + timedelta(days=self.rng.randrange((last - first).days + 1))

    def option(self, name: str, value: str, autoload: str = "yes") -> None:
        self.bulk.add(f"{self.prefix}options", (name, value, autoload))

    def usermeta(self, user_id: int, key: str, value: str) -> None:
        self.bulk.add(f"{self.base}usermeta", (user_id, key, value))

    def postmeta(self, post_id: int, key: str, value: str) -> None:
        self.bulk.add(f"{self.prefix}postmeta", (post_id, key, value))

    def termmeta(self, term_id: int, key: str, value: str) -> None:
        self.bulk.add(f"{self.prefix}termmeta", (term_id, key, value))

    def post(self, post_id: int, *, title: str, post_type: str, moment: datetime, status: str = "publish",
             content: str = "", name: str = "", author: int = ADMIN_ID) -> None:
        local, gmt = self._local(moment), self._utc(moment)
        guid = f"{SITE_URL}/?post_type={post_type}&p={post_id}" if post_type != "page" else f"{SITE_URL}/?page_id={post_id}"
        self.bulk.add(f"{self.prefix}posts", (post_id, author, local, gmt, content, title, "", status,
                                              name or f"{post_type}-{post_id}", local, gmt, 0, guid, post_type))

    def term(self, term_id: int, name: str, slug: str, taxonomy: str, parent: int = 0, count: int = 0,
             custom_order: int = 9999, description: str = "") -> None:
        self.bulk.add(f"{self.prefix}terms", (term_id, name, slug, 0))
        self.bulk.add(f"{self.prefix}term_taxonomy", (term_id, term_id, taxonomy, description, parent, count,
                                                      custom_order))

    # -- site-wide pieces -----------------------------------------------------------------------------

    def build_options(self, home_id: int) -> None:
        offset = self.tz.utcoffset(datetime(self.today.year, self.today.month, self.today.day))
        hours = offset.total_seconds() / 3600 if offset is not None else 0
        gmt_offset = str(int(hours)) if hours == int(hours) else str(hours)
        main_options = {
            "home_id": home_id,
            "main": {"opened": "on", "hide_ask_form": "off"},
            "letters": {
                "registration": {"title": "Регистрация на сайте", "content": "<p>Ваш логин: [user_login]</p>"},
                "mandrill_is_on": "off", "mandrill_api_key": "", "ses_is_on": "off", "ses_email": "",
                "ses_access_key": "", "ses_secret_key": "",
            },
            "registration_form": {"name": "on", "surname": "on", "patronymic": "off", "phone": "on",
                                  "custom1": "off"},
            "utm_expiration_days": "7",
            "material_url_is_auth": "off", "page_link_is_auth": "off", "user_key_link_is_auth": "on",
            "start_page_is_auth": "on",
            "pincode_page": {"lvl": "", "term_key": ""},
            "mblp": {"auto_activation": "on", "send_key_email": "on"},
        }
        licence = {"keys": {"active": [{"key": "DEMO-0000-0000-0000", "type": "fullpackaccess"}]}}
        roles = _user_roles()
        options = [
            ("siteurl", SITE_URL), ("home", SITE_URL), ("blogname", "Школа онлайн-курсов (demo)"),
            ("blogdescription", "Учимся каждый день"), ("admin_email", "admin@school.example"),
            ("permalink_structure", "/%postname%/"), ("WPLANG", "ru_RU"), ("date_format", "d.m.Y"),
            ("time_format", "H:i"), ("start_of_week", "1"),
            ("timezone_string", self.timezone_string), ("gmt_offset", gmt_offset),
            (f"{self.prefix}user_roles", php_serialize(roles)),
            ("active_plugins", php_serialize([
                "member-luxe/member-luxe.php", "mbl-api/mbl-api.php", "mbl-certificates/mbl-certificates.php",
                "mbl-auto-responder/mbl-auto-responder.php", "woocommerce/woocommerce.php",
                "mbl-payments/mbl-payments.php", "ml-bundle-courses/ml-bundle-courses.php",
                "ml-learning-monitor/ml-learning-monitor.php"])),
            ("wpm_version", "2.97"), ("memberlux_db_version", "0.7.9.7"),
            ("wpm_last_db_update", "2.97"), ("wpm_has_to_update_term_keys", ""),
            ("wpm_main_options", php_serialize(main_options)),
            ("wpm_key_data", php_serialize(licence)),
            ("mblc_version", "2.12"), ("mb_api_db_version", "2.1"),
            ("mblc_options", php_serialize({"email_subject": "Ваш сертификат",
                                            "email_message": "<p>Поздравляем! [certificate_link]</p>"})),
            ("mblar", '{"unsubscribe_success_url":"https://school.example/unsubscribed/",'
                      '"unsubscribe_all":"Отписаться от всех рассылок","unsubscribe_current":"Отписаться"}'),
            ("woocommerce_currency", "RUB"), ("woocommerce_version", "8.9.3"),
        ]
        for name, value in options:
            self.option(name, value)

    def build_staff(self) -> None:
        base_moment = datetime.combine(self.site_start, datetime.min.time(), tzinfo=timezone.utc)
        staff = [
            (ADMIN_ID, DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD, "admin@school.example", "Ольга", "Кравцова",
             "administrator", base_moment + timedelta(hours=9)),
            (API_USER_ID, DEMO_API_LOGIN, None, "sidecar@school.example", "", "",
             "administrator", datetime.combine(self.today - timedelta(days=30), datetime.min.time(),
                                               tzinfo=timezone.utc) + timedelta(hours=11)),
            (COACH_ID, DEMO_COACH_LOGIN, DEMO_COACH_PASSWORD, "coach@school.example", "Игорь", "Тренеров",
             "coach", base_moment + timedelta(days=20, hours=10)),
        ]
        for uid, login, password, email, first, last, role, registered in staff:
            # The REST account never logs in interactively: a random password, like WordPress makes.
            secret = password if password is not None else "".join(self.rng.choice(_ALNUM) for _ in range(24))
            pass_hash = wp_password_hash(secret, rng=self.rng)
            display = f"{first} {last}".strip() or login
            self.bulk.add(f"{self.base}users", (uid, login, pass_hash, login, email, "", self._utc(registered),
                                                "", 0, display))
            for key, value in (("nickname", login), ("first_name", first), ("last_name", last),
                               ("rich_editing", "true"), ("locale", ""),
                               (self.caps_key, php_serialize({role: True})),
                               (self.level_key, "10" if role == "administrator" else "0")):
                self.usermeta(uid, key, value)
        self.usermeta(COACH_ID, "_mblc_coach_certificate_access", "all")
        self.summary.users += len(staff)

    def build_terms_and_levels(self) -> None:
        rng = self.rng
        self.term(1, "Без рубрики", "bez-rubriki", "category")
        for term_id, slug in ((2, "simple"), (3, "grouped"), (4, "variable"), (5, "external"), (6, "mbl_key")):
            self.term(term_id, slug, slug, "product_type")
        self.mbl_key_tt = 6
        self.simple_tt = 2
        next_id = 7
        n = self.n_levels
        top_level: list[_Level] = []
        module_counter: dict[int, int] = {}
        last_created = self.today - timedelta(days=60)
        for i in range(n):
            term_id = next_id
            next_id += 1
            created = self.site_start + timedelta(days=int((last_created - self.site_start).days * (i / max(1, n)) ** 1.3))
            parent = 0
            if top_level and i >= 2 and rng.random() < 0.25:
                parent_level = top_level[rng.randrange(len(top_level))]
                parent = parent_level.term_id
                module_counter[parent] = module_counter.get(parent, 0) + 1
                name = f"{parent_level.name}: модуль {module_counter[parent]}"
                created = max(created, parent_level.created)
            else:
                base_name = _COURSES[len(top_level) % len(_COURSES)]
                stream = len(top_level) // len(_COURSES)
                name = base_name if stream == 0 else f"{base_name} (поток {stream + 1})"
            level = _Level(term_id=term_id, name=name, slug=f"{_translit(name)[:180]}-{term_id}", parent=parent,
                           created=created, cert_mode="none")
            if parent == 0:
                top_level.append(level)
            self.levels.append(level)
        # Popularity is skewed: a few flagship courses sell most keys.
        weights = [1.0 / (rank + 1) ** 0.8 for rank in range(n)]
        order = list(range(n))
        rng.shuffle(order)
        total = sum(weights)
        self.level_cum = []
        acc = 0.0
        for rank in range(n):
            acc += weights[rank] / total
            self.level_cum.append(acc)
        self.level_rank_to_index = order
        share = [0.0] * n
        for rank, index in enumerate(order):
            share[index] = weights[rank] / total
        for level, mode in zip(self.levels, self._certificate_modes(share), strict=True):
            level.cert_mode = mode
        # A level deleted by an admin: its rows stay behind in term_keys (core.md 2.1).
        self.deleted_level = next_id
        next_id += 1
        self.summary.deleted_level_id = self.deleted_level
        for position, level in enumerate(self.levels):
            self.term(level.term_id, level.name, level.slug, "wpm-levels", parent=level.parent,
                      custom_order=position if rng.random() < 0.7 else 9999,
                      description=f"Доступ к курсу «{level.name}»")
            self._level_settings(level)
        # Material categories share the taxonomy_term_{id} option naming with levels (core.md 2.1).
        for title in ("Вводные уроки", "Домашние задания"):
            self.term(next_id, title, _translit(title), "wpm-category")
            self.option(f"taxonomy_term_{next_id}", php_serialize({"category_type": "default", "hide": "off"}))
            next_id += 1
        self.summary.levels = n
        self.summary.level_ids = [level.term_id for level in self.levels]
        self.summary.parent_of = {level.term_id: level.parent for level in self.levels if level.parent}
        self.summary.auto_certificate_levels = [lv.term_id for lv in self.levels if lv.cert_mode == "auto"]
        self.summary.manual_certificate_levels = [lv.term_id for lv in self.levels
                                                  if lv.cert_mode in ("employee", "implicit")]
        self.summary.no_certificate_levels = [lv.term_id for lv in self.levels if lv.cert_mode == "none"]
        self.level_by_id = {level.term_id: level for level in self.levels}

    def _certificate_modes(self, share: list[float]) -> list[str]:
        """Certificate mode per level, given each level's share of activations.

        Auto levels get a certificate at every activation, so they are picked until they cover about
        10 % of activations (a realistic certificate volume); at least one level is auto. The rest
        split between manual issue and no certificates, with every flavour present when possible.
        """
        rng = self.rng
        n = len(share)
        modes = ["none"] * n
        candidates = list(range(n))
        rng.shuffle(candidates)
        covered = 0.0
        for index in candidates:
            if covered == 0.0 or covered + share[index] <= 0.10:
                modes[index] = "auto"
                covered += share[index]
        rest = [index for index in candidates if modes[index] != "auto"]
        for position, index in enumerate(rest):
            if position == 0:
                modes[index] = "employee"
            elif position == 1:
                modes[index] = "none"
            elif position == 2:
                modes[index] = "implicit"  # has certificates, no how-to meta: behaves as "employee"
            else:
                modes[index] = "employee" if rng.random() < 0.55 else "none"
        return modes

    def _level_settings(self, level: _Level) -> None:
        rng = self.rng
        letters_on = rng.random() < 0.5
        settings: dict[str, object] = {}
        for n, days in ((1, 7), (2, 3), (3, 1)):
            settings[f"letter_{n}_days"] = str(days) if letters_on else ""
            settings[f"letter_{n}_title"] = f"Доступ к курсу «{level.name}» заканчивается" if letters_on else ""
            settings[f"letter_{n}"] = (f"<p>[user_name], до окончания доступа осталось {days} дн.</p>"
                                       f"<p>[start_page]</p>") if letters_on else ""
        settings.update({
            "mass_keys_title": "Вам открыт доступ", "mass_keys_message": "<p>Доступ открыт: [start_page]</p>",
            "mass_users_title": "Регистрация", "mass_users_message": "<p>Логин: [user_login]</p>",
            "no_access_content": "<p>Материал доступен после покупки курса.</p>", "hide_for_no_access": "hide",
            "auto_subscriptions": {"mailchimp": {"enabled": "off"}},
        })
        self.option(f"taxonomy_term_{level.term_id}", php_serialize(settings))
        if level.cert_mode != "none":
            level.series = f"ML-{level.term_id:03d}"
            fields = {"field1": f"Объём курса: {rng.choice([16, 24, 36, 72])} ак. ч.",
                      "field2": "Преподаватель: И. Тренеров"}
            level.custom_fields = php_serialize(fields)
            self.termmeta(level.term_id, "_mblc_has_certificate", "yes")
            if level.cert_mode in ("auto", "employee"):
                self.termmeta(level.term_id, "_mblc_how_to_issue", level.cert_mode)
            self.termmeta(level.term_id, "_mblc_certificate_series", level.series)
            self.termmeta(level.term_id, "_mblc_course_name", level.name)
            self.termmeta(level.term_id, "_mblc_template_id", "1")
            self.termmeta(level.term_id, "_mblc_field1", fields["field1"])
            self.termmeta(level.term_id, "_mblc_field2", fields["field2"])
        # Legacy learning monitor (legacy-plugins.md 3.1): saved on most levels, never on some.
        roll = rng.random()
        if roll < 0.75:
            enabled = "1" if roll < 0.5 else "0"
            self.termmeta(level.term_id, "mlm_enabled", enabled)
            for n, days in ((1, 3), (2, 10), (3, 30)):
                self.termmeta(level.term_id, f"mlm_email_{n}_days", str(days) if n < 3 or roll < 0.3 else "0")
                self.termmeta(level.term_id, f"mlm_email_{n}_subject", f"Мы скучаем по вам: {level.name}")
                self.termmeta(level.term_id, f"mlm_email_{n}_body",
                              "<p>Здравствуйте! Доступ к курсу [course_name] закончился [expired_date].</p>"
                              "<p>Ваш логин: [user_login], e-mail: [user_email].</p>")
            self.termmeta(level.term_id, "mlm_admin_days_after_last", "7")
            self.termmeta(level.term_id, "mlm_admin_email", "manager@school.example")
            self.termmeta(level.term_id, "mlm_admin_subject", "Студент не продлил доступ")
            self.termmeta(level.term_id, "mlm_admin_body",
                          "<p>[user_email] не вернулся к курсу [course_name] после [expired_date].</p>")

    def build_posts(self) -> int:
        """Start page, certificate template, programs and products. Returns the start page id."""
        rng = self.rng
        start_moment = datetime.combine(self.site_start, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=10)
        home_id = 1
        self.post(home_id, title="Мои курсы", post_type="page", moment=start_moment, name="start",
                  content="[wpm_start_page]")
        self.bulk.add(f"{self.prefix}memberlux_certificate_templates",
                      (1, "Стандартный сертификат",
                       '{"background":"certificate-bg.jpg","elements":[{"type":"text","field":"graduate_name",'
                       '"x":120,"y":300},{"type":"text","field":"course_name","x":120,"y":360}]}',
                       "horizontal"))
        self.bulk.add(f"{self.prefix}memberlux_certificate_templates",
                      (2, "Сертификат (вертикальный)", '{"background":"portrait.jpg","elements":[]}', "vertical"))
        next_post = 2
        # Programs (legacy-plugins.md 2.1) chain levels whose certificates are issued by hand.
        manual = [lv for lv in self.levels if lv.cert_mode in ("employee", "implicit") and lv.parent == 0]
        if len(manual) < 2:
            manual = [lv for lv in self.levels if lv.cert_mode in ("employee", "implicit")]
        n_programs = min(3, len(manual) // 2)
        for index in range(n_programs):
            length = min(len(manual), rng.randint(2, 4))
            chosen = rng.sample(manual, length)
            steps = [(chosen[0].term_id, 1, "months")]  # step 1 is always stored as 1 month (2.1)
            for lv in chosen[1:]:
                steps.append((lv.term_id,) + rng.choice([(1, "months"), (2, "months"), (3, "months"), (30, "days")]))
            post_id = next_post
            next_post += 1
            title = f"Сборный курс №{index + 1}: " + " → ".join(lv.name for lv in chosen)
            # The custom plugin is younger than keys_meta, so its keys always carry source program_flow.
            moment = datetime.combine(self.keys_meta_since, datetime.min.time(), tzinfo=timezone.utc) + timedelta(
                days=60 + 40 * index, hours=10)
            self.post(post_id, title=title[:200], post_type="ml_program", moment=moment,
                      status="draft" if index == 2 else "publish")
            self.postmeta(post_id, "mlp_steps", php_serialize(
                [{"term_id": t, "duration": d, "units": u} for t, d, u in steps]))
            self.postmeta(post_id, "mlp_notify_enabled", "1" if index != 1 else "0")
            self.postmeta(post_id, "mlp_notify_email", "manager@school.example")
            self.postmeta(post_id, "mlp_notify_step_subject", "[user_login] перешёл к шагу [next_step]")
            self.postmeta(post_id, "mlp_notify_step_body",
                          "<p>[display_name] ([user_email]) завершил «[current_course]» и получил доступ к "
                          "«[next_course]» на [duration] [units].</p>")
            self.postmeta(post_id, "mlp_notify_complete_subject", "[user_login] завершил программу")
            self.postmeta(post_id, "mlp_notify_complete_body", "<p>Программа «[program_title]» пройдена.</p>")
            if index == 0 and self.program_webhook_url:
                self.postmeta(post_id, "mlp_webhook_url", self.program_webhook_url)
            self.programs.append(_Program(post_id, title, steps))
        self.summary.program_ids = [p.post_id for p in self.programs]
        # WooCommerce products of type mbl_key, a few terms per level (core.md 5.4).
        products: list[SeedProduct] = []
        for position, level in enumerate(self.levels):
            base_price = rng.choice([990, 1490, 1990, 2990, 4990, 7990])
            terms = [(1, "months", False), (3, "months", False), (12, "months", False)]
            if position % 3 == 1:
                terms.append((30, "days", False))
            if position % 4 == 0:
                terms.append((12, "months", True))
            for duration, units, unlimited in terms:
                months = duration if units == "months" else 1
                price = base_price * (months if not unlimited else 24) * (85 if months >= 3 else 100) // 100
                products.append(SeedProduct(next_post, level.term_id, duration, units, unlimited, price))
                next_post += 1
        if self.levels:
            first = self.levels[0]
            # A free product (source free_item) and a draft one: the order endpoint ignores the status.
            products.append(SeedProduct(next_post, first.term_id, 7, "days", False, 0))
            products.append(SeedProduct(next_post + 1, first.term_id, 6, "months", False, 2990, status="draft"))
            next_post += 2
        products.append(SeedProduct(next_post, 0, 0, "months", False, 590, product_type="simple"))
        next_post += 1
        for product in products:
            moment = start_moment + timedelta(days=30 + (product.product_id % 97))
            if product.product_type == "simple":
                title = "Рабочая тетрадь (PDF)"
            else:
                level = self.level_by_id[product.level_id]
                term_text = "навсегда" if product.is_unlimited else (
                    f"{product.duration} мес." if product.units == "months" else f"{product.duration} дн.")
                title = f"{level.name} — {term_text}"
            self.post(product.product_id, title=title, post_type="product", moment=moment, status=product.status)
            self.bulk.add(f"{self.prefix}term_relationships",
                          (product.product_id, self.mbl_key_tt if product.product_type == "mbl_key" else self.simple_tt, 0))
            meta = [("_price", str(product.price)), ("_regular_price", str(product.price)), ("_virtual", "yes"),
                    ("_stock_status", "instock"), ("_sold_individually", "no"), ("_tax_status", "taxable")]
            if product.product_type == "mbl_key":
                meta += [("_mbl_key_pin_code_level_id", str(product.level_id)),
                         ("_mbl_key_pin_code_duration", str(product.duration)),
                         ("_mbl_key_pin_code_units", product.units),
                         ("_mbl_key_pin_code_is_unlimited", "on" if product.is_unlimited else "off")]
            for key, value in meta:
                self.postmeta(product.product_id, key, value)
        self.summary.products = products
        return home_id

    def build_hooks(self) -> None:
        created = self._utc(datetime.combine(self.today - timedelta(days=400), datetime.min.time()) + timedelta(hours=12))
        if not self.webhook_url:
            return
        self.bulk.add(f"{self.prefix}memberlux_hook", (1, self.webhook_url, 1, created, 1))
        self.bulk.add(f"{self.prefix}memberlux_hook_action", (1, "all"))

    # -- keys ---------------------------------------------------------------------------------------

    def _key_row(self, key_id: int, term_id: int, user_id: int | None, code: str, key_type: str, status: str,
                 sent: int, banned: int, duration: int, units: str, start: str, end: str, registered: str | None,
                 unlimited: int) -> None:
        self.bulk.add(f"{self.prefix}memberlux_term_keys", (key_id, term_id, user_id, code, key_type, status, sent,
                                                            banned, duration, units, start, end, registered, unlimited))

    def build_unused_keys(self) -> None:
        rng = self.rng
        pools = [(lv.term_id, lv.created) for lv in self.levels]
        pools.append((self.deleted_level, self.site_start + timedelta(days=100)))
        total = 0
        for term_id, created in pools:
            ts = int(datetime.combine(created, datetime.min.time(), tzinfo=timezone.utc).timestamp()) + 36000
            for _ in range(UNUSED_KEYS_PER_LEVEL):
                self._key_row(self.next_key_id, term_id, None, generate_key_code(rng, ts), "wpm_term_keys", "new",
                              0, 0, 12, "months", ZERO_DATE, ZERO_DATE, None, 0)
                self.next_key_id += 1
                total += 1
            # Codes handed out (pin-code page, mass mail) but never activated: re-saved with 1 Jan of
            # (year of the rewrite + 10) as both dates and sent = 1 (core.md 3.3).
            if term_id != self.deleted_level:
                for _ in range(rng.randint(5, 30)):
                    rewrite_year = self._day_between(created, self.today).year
                    placeholder = f"{rewrite_year + 10}-01-01"
                    self._key_row(self.next_key_id, term_id, None, generate_key_code(rng, ts), "wpm_term_keys",
                                  "new", 1, 0, 12, "months", placeholder, placeholder, None, 0)
                    self.next_key_id += 1
                    total += 1
        # "Delete all keys of this period" moves unused codes to the basket as well.
        if self.levels:
            level = self.levels[len(self.levels) // 2]
            ts = int(datetime.combine(level.created, datetime.min.time(), tzinfo=timezone.utc).timestamp()) + 50000
            for _ in range(20):
                self._key_row(self.next_key_id, level.term_id, None, generate_key_code(rng, ts), "wpm_keys_basket",
                              "new", 0, 0, 3, "months", ZERO_DATE, ZERO_DATE, None, 0)
                self.next_key_id += 1
                total += 1
        self.summary.unused_keys = total
        self.summary.keys += total

    def _pick_level(self) -> _Level:
        rank = bisect.bisect_left(self.level_cum, self.rng.random())
        return self.levels[self.level_rank_to_index[min(rank, len(self.levels) - 1)]]

    def _activate(self, history: list[_Key], term: int, day: date, duration: int, units: str, source: str, *,
                  unlimited: bool = False, registration: bool = False) -> _Key:
        """One activation with MemberLux's arithmetic (core.md 3.2), relative to earlier rows of the history."""
        start = day
        if not registration:
            stacking = [k for k in history if not k.banned and not k.basket]
            if stacking and not any(k.unlimited for k in stacking):
                latest = max(k.end for k in stacking)
                if latest > start:
                    start = latest
        end = add_duration(start, duration, units)
        key = _Key(term, duration, units, unlimited, start, end, None if registration else day,
                   self._moment(day), source)
        history.append(key)
        return key

    def _history(self, level: _Level | None, term: int, first_day: date, reg_day: date,
                 normal_source: _Picker, registration_source: _Picker, month_term: _Picker, day_term: _Picker,
                 scenario: str) -> list[_Key]:
        rng, today = self.rng, self.today
        keys: list[_Key] = []
        act = self._activate
        if scenario == "registration":
            act(keys, term, reg_day, month_term(rng), "months", registration_source(rng), registration=True)
            if rng.random() < 0.5:
                renew = keys[-1].end - timedelta(days=rng.randrange(0, 20))
                if reg_day < renew <= today:
                    act(keys, term, renew, month_term(rng), "months", normal_source(rng))
            return keys
        if scenario == "days":
            k = act(keys, term, first_day, day_term(rng), "days", normal_source(rng))
            if rng.random() < 0.3:
                renew = k.end - timedelta(days=rng.randrange(0, 5))
                if first_day < renew <= today:
                    act(keys, term, renew, day_term(rng), "days", normal_source(rng))
            return keys
        if scenario == "duration0":
            act(keys, term, first_day, 0, rng.choice(["months", "days"]), "profile_page_admin")
            return keys
        if scenario == "unlimited":
            if rng.random() < 0.3:
                act(keys, term, first_day, month_term(rng), "months", normal_source(rng))
                later = self._day_between(first_day, today)
                act(keys, term, later, 12, "months", normal_source(rng), unlimited=True)
            else:
                act(keys, term, first_day, 12, "months", normal_source(rng), unlimited=True)
            return keys
        k = act(keys, term, first_day, month_term(rng), "months", normal_source(rng))
        if scenario == "stacked":
            for _ in range(rng.randint(1, 3)):
                # Renewed before expiry: the new row starts at the old date_end (maybe in the future).
                renew = k.end - timedelta(days=rng.randrange(0, 25))
                if renew < k.activated.date():
                    renew = k.activated.date()
                if renew > today:
                    break
                k = act(keys, term, renew, month_term(rng), "months", normal_source(rng))
        elif scenario == "lapse":
            for _ in range(rng.randint(1, 2)):
                renew = k.end + timedelta(days=rng.randint(3, 400))
                if renew > today:
                    break
                k = act(keys, term, renew, month_term(rng), "months", normal_source(rng))
        elif scenario == "banned":
            variant = rng.random()
            if variant < 0.4:
                k.banned = True  # the only key, banned: nothing hides behind it
            elif variant < 0.7:
                renew = k.end - timedelta(days=rng.randrange(0, 25))
                if k.activated.date() <= renew <= today:
                    act(keys, term, renew, month_term(rng), "months", normal_source(rng))
                k.banned = True  # banned after the renewal was stacked on it: a gap remains
            else:
                renew = k.end + timedelta(days=rng.randint(3, 200))
                if renew <= today:
                    k = act(keys, term, renew, month_term(rng), "months", normal_source(rng))
                k.banned = True  # the latest key banned, the older one long expired
        elif scenario == "basket":
            k.basket = True
            if rng.random() < 0.3:
                renew = k.end + timedelta(days=rng.randint(1, 100))
                if renew <= today:
                    act(keys, term, renew, month_term(rng), "months", normal_source(rng))
        return keys

    def _statuses(self, keys: list[_Key]) -> None:
        rng, today = self.rng, self.today
        last_normal = max((k.activated.date() for k in keys if k.registered is not None), default=None)
        # Adding a code resets all non-banned rows of the user to "used" until the next cron run (3.3).
        flipped = last_normal is not None and last_normal >= today - timedelta(days=1)
        for k in keys:
            if k.unlimited or k.basket:
                status = "used"
            elif k.banned:
                status = "used" if k.end > today or rng.random() < 0.7 else "expired"
            elif k.end > today:
                status = "used"
            elif k.end == today:
                status = "used" if rng.random() < 0.5 else "expired"  # today's cron may not have run yet
            else:
                status = "used" if rng.random() < 0.02 else "expired"  # WP-Cron lag: used past the end
                if flipped and not k.basket:
                    status = "used"
            k.status = status
            if k.source == "activation_page" and rng.random() < 0.15:
                k.sent = 1

    def build_learners(self) -> None:
        rng = self.rng
        today = self.today
        n = self.n_learners
        levels = self.levels
        normal_source = _Picker(_NORMAL_SOURCES)
        registration_source = _Picker(_REGISTRATION_SOURCES)
        month_term = _Picker(_MONTH_TERMS)
        day_term = _Picker(_DAY_TERMS)
        scenario_pick = _Picker(_SCENARIOS)
        utm_picks = (_UTM_SOURCES, _UTM_MEDIUMS)
        p = self.prefix
        users_table, keys_meta_table, cert_table = f"{self.base}users", f"{p}memberlux_keys_meta", f"{p}memberlux_certificate"
        span = (today - timedelta(days=2) - self.site_start).days
        total_keys_target = 5 * n
        activated_target = max(1.5 * n, total_keys_target - self.summary.unused_keys)
        per_user_target = activated_target / max(1, n)
        produced = 0
        # Counted per attempt, so histories lost to level collisions are made up for by later users.
        histories_tried = 0
        enrol_rate = 0.03 if self.programs else 0.0
        program_levels = {step[0] for prog in self.programs for step in prog.steps}
        blocked = enrolled = 0
        usermeta_rows = 0
        summary = self.summary
        caps_customer = php_serialize({"customer": True})
        caps_subscriber = php_serialize({"subscriber": True})
        for i in range(n):
            uid = FIRST_LEARNER_ID + i
            # Registrations accelerate over the years; ids ascend with registration time.
            frac = ((i + rng.random()) / n) ** 0.75
            reg_moment = datetime.combine(self.site_start, datetime.min.time(), tzinfo=timezone.utc) + timedelta(
                seconds=int(frac * span * 86400))
            reg_day = reg_moment.date()
            # -- identity ------------------------------------------------------------------------------
            roll = rng.random()
            patronymic = ""
            if roll < 0.75:
                female = rng.random() < 0.6
                first = rng.choice(_RU_FEMALE if female else _RU_MALE)
                last = rng.choice(_RU_LAST) + ("а" if female else "")
                if rng.random() < 0.3:
                    patronymic = rng.choice(_RU_FATHERS)[1 if female else 0]
                first_l, last_l = _translit(first), _translit(last)
            else:
                first, last = rng.choice(_EN_FIRST), rng.choice(_EN_LAST)
                first_l, last_l = first.lower(), last.lower()
            style = rng.random()
            if style < 0.5:
                local = f"{first_l}.{last_l}{uid}"
            elif style < 0.8:
                local = f"{first_l[0]}{last_l}{uid}"
            else:
                local = f"{last_l}_{uid}"
            email = f"{local}@{_EMAIL_DOMAINS[uid % len(_EMAIL_DOMAINS)]}"
            if rng.random() < 0.03:
                email = email.capitalize()  # stored as typed; WordPress matches e-mails case-insensitively
            if rng.random() < 0.03:
                first = last = patronymic = ""
            login = local[:60]
            display = f"{first} {last}".strip() or login
            h = rng.random()
            if i < 10:
                # bcrypt costs ~50 ms a hash: only a handful of learners get their own salt.
                pass_hash = wp_password_hash(DEMO_LEARNER_PASSWORD, rng=self.rng)
            elif h < 0.85:
                pass_hash = _LEARNER_HASH_WP_BCRYPT
            elif h < 0.99:
                pass_hash = _LEARNER_HASH_PHPASS
            else:
                pass_hash = _LEARNER_HASH_MD5
            self.bulk.add(users_table, (uid, login, pass_hash, login.replace(".", "-").replace("_", "-")[:50], email,
                                        "", self._utc(reg_moment), "", 0, display))
            meta = [("nickname", login), ("first_name", first), ("last_name", last),
                    (self.caps_key, caps_subscriber if rng.random() < 0.03 else caps_customer),
                    (self.level_key, "0")]
            if patronymic:
                meta.append(("surname", patronymic))
            if rng.random() < 0.4:
                meta.append(("phone", f"+7 9{rng.randrange(10, 100)} {rng.randrange(100, 1000)}-"
                                      f"{rng.randrange(10, 100)}-{rng.randrange(10, 100)}"))
            if rng.random() < 0.05:
                meta.append(("custom1", rng.choice(["Москва", "Казань", "Новосибирск", "Екатеринбург"])))
            if rng.random() < 0.02:
                meta.append(("wpm_status", "inactive"))
                blocked += 1
            # -- access histories --------------------------------------------------------------------
            e_h = produced / histories_tried if histories_tried > 50 else 1.7
            # Steer by the running deficit, so the site ends close to its key budget whatever the
            # level count and the collisions between histories.
            base_mean = per_user_target / e_h
            mean = min(2 * base_mean, max(0.5 * base_mean, (per_user_target * (i + 1) - produced) / e_h))
            n_hist = _poisson(rng, mean)
            keys: list[_Key] = []
            certs: list[_Cert] = []
            used_terms: set[int] = set()
            enrolled_program: _Program | None = None
            if enrol_rate and rng.random() < enrol_rate:
                enrolled_program = self.programs[rng.randrange(len(self.programs))]
                used_terms.update(program_levels)
                n_hist = min(n_hist, 1)
            for h_index in range(min(n_hist, len(levels) + 1)):
                histories_tried += 1
                if rng.random() < 0.003:
                    level, term = None, self.deleted_level
                else:
                    level = None
                    for _attempt in range(6):
                        candidate = self._pick_level()
                        if candidate.term_id not in used_terms:
                            level = candidate
                            break
                    if level is None:
                        continue
                    term = level.term_id
                if term in used_terms:
                    continue
                used_terms.add(term)
                opened = level.created if level is not None else self.site_start + timedelta(days=100)
                earliest = max(reg_day, opened)
                if earliest > today:
                    continue
                first_day = earliest if (h_index == 0 and rng.random() < 0.7) else self._day_between(earliest, today)
                scenario = scenario_pick(rng)
                if scenario == "registration" and (h_index > 0 or earliest != reg_day):
                    scenario = "single"
                history = self._history(level, term, first_day, earliest, normal_source, registration_source,
                                        month_term, day_term, scenario)
                if (h_index == 0 and first_day == reg_day and history[0].registered is not None
                        and rng.random() < 0.06):
                    history[0].source = "bulk_operations_reg"  # registered by an admin's bulk import
                keys.extend(history)
                if level is not None:
                    self._certificates_for(level, history, uid, certs)
            if enrolled_program is not None:
                enrolled += 1
                self._program_progress(enrolled_program, uid, reg_day, keys, certs, meta)
            produced += len(keys)
            # -- rows ----------------------------------------------------------------------------------
            self._statuses(keys)
            keys.sort(key=lambda k: k.activated)
            for k in keys:
                key_id = self.next_key_id
                self.next_key_id += 1
                ts = int(k.activated.timestamp())
                self._key_row(key_id, k.term, uid, generate_key_code(rng, ts - rng.randrange(0, 600)),
                              "wpm_keys_basket" if k.basket else "wpm_term_keys", k.status, k.sent,
                              1 if k.banned else 0, k.duration, k.units, k.start.isoformat(), k.end.isoformat(),
                              k.registered.isoformat() if k.registered is not None else None,
                              1 if k.unlimited else 0)
                if k.activated.date() >= self.keys_meta_since:
                    utm = (None,) * 6
                    if rng.random() < 0.08:
                        utm = (rng.choice(utm_picks[0]), rng.choice(utm_picks[1]),
                               f"{k.activated.year}_{rng.choice(['spring', 'summer', 'autumn', 'winter', 'sale'])}",
                               None, None, rng.choice([None, "banner_a", "banner_b"]))
                    self.bulk.add(keys_meta_table, (key_id, self._utc(k.activated), k.source) + utm)
                    summary.keys_meta += 1
            certs.sort(key=lambda c: (c.create_date, not c.auto))
            for c in certs:
                c.cert_id = self.next_cert_id
                self.next_cert_id += 1
                level = self.level_by_id[c.level]
                self.bulk.add(cert_table, (c.cert_id, uid, c.level, level.name[:100], 1, first[:60], last[:60],
                                           patronymic[:60], c.date_issue.isoformat(), level.series, f"{uid:05d}",
                                           c.responsible, c.create_date.isoformat(), level.name,
                                           level.custom_fields))
                if c.auto:
                    summary.auto_certificates += 1
                else:
                    summary.manual_certificates += 1
            if enrolled_program is not None:
                advancing = [c for c in certs if c.advances_program]
                last_hash = hashlib.md5(f"{uid}:{advancing[-1].cert_id}".encode()).hexdigest() if advancing else ""
                meta.append(("mlp_last_certificate_hash", last_hash))
            for key, value in meta:
                self.usermeta(uid, key, value)
            usermeta_rows += len(meta)
            summary.activated_keys += len(keys)
            summary.certificates += len(certs)
            if (i + 1) % 2000 == 0 or i + 1 == n:
                self._tick("learners", i + 1, n)
        summary.learners = n
        summary.users += n
        summary.blocked_users = blocked
        summary.enrolled_users = enrolled
        summary.keys += summary.activated_keys
        summary.usermeta = usermeta_rows

    def _certificates_for(self, level: _Level, history: list[_Key], uid: int, certs: list[_Cert]) -> None:
        rng, today = self.rng, self.today
        if level.cert_mode == "auto":
            # The module issues one at every activation of an auto level, renewals included (core.md 4).
            for k in history:
                day = k.activated.date()
                source = k.source
                if source in ("activation_page", "profile_page_self", "free_registration_form", "auto_registration"):
                    responsible = uid
                elif source in ("profile_page_admin", "bulk_operations_add", "bulk_operations_reg"):
                    responsible = ADMIN_ID
                elif source in ("purchase", "free_item"):
                    roll = rng.random()
                    responsible = API_USER_ID if roll < 0.3 else uid if roll < 0.8 else 0
                else:
                    responsible = 0
                certs.append(_Cert(level.term_id, day, day, responsible, True))
            if rng.random() < 0.01:
                # An admin also issued one by hand on an auto level (the legacy program plugin ignores it).
                created = self._day_between(history[0].activated.date(), today)
                certs.append(_Cert(level.term_id, created - timedelta(days=rng.randint(1, 20)), created, ADMIN_ID, False))
        elif level.cert_mode in ("employee", "implicit") and rng.random() < 0.12:
            first_day = history[0].activated.date()
            created = first_day + timedelta(days=rng.randint(10, 120))
            if created > today:
                return
            issue = created if rng.random() < 0.55 else created - timedelta(days=rng.randint(1, 45))
            responsible = ADMIN_ID if rng.random() < 0.7 else COACH_ID
            certs.append(_Cert(level.term_id, issue, created, responsible, False))
            if rng.random() < 0.02:
                later = self._day_between(created, today)
                certs.append(_Cert(level.term_id, later, later, responsible, False))  # nothing prevents duplicates

    def _program_progress(self, program: _Program, uid: int, reg_day: date, keys: list[_Key], certs: list[_Cert],
                          meta: list[tuple[str, str]]) -> None:
        """Enrolment, hand-granted first step and certificate-driven steps (legacy-plugins.md 2.3-2.4)."""
        rng, today = self.rng, self.today
        enrol_day = self._day_between(max(reg_day, self.keys_meta_since + timedelta(days=180)), today)
        meta.append(("mlp_program_id", str(program.post_id)))
        first_term, first_duration, first_units = program.steps[0]
        history: list[_Key] = []
        # The plugin does not grant step 1: the admin does it by hand in the profile.
        key = self._activate(history, first_term, enrol_day, first_duration, first_units, "profile_page_admin")
        step = 0
        while True:
            if rng.random() > 0.65:
                break
            created = key.activated.date() + timedelta(days=rng.randint(5, 40))
            if created > today:
                break
            issue = created if rng.random() < 0.6 else created - timedelta(days=rng.randint(1, 5))
            responsible = ADMIN_ID if rng.random() < 0.7 else COACH_ID
            cert = _Cert(program.steps[step][0], issue, created, responsible, False)
            cert.advances_program = True
            certs.append(cert)
            if step + 1 >= len(program.steps):
                break
            step += 1
            term, duration, units = program.steps[step]
            key = self._activate(history, term, created, duration, units, "program_flow")
            # The plugin then rewrites the new key's dates from the certificate's issue date (2.4 step 9).
            key.start = issue
            key.end = add_duration(issue, duration, units)
            key.activated = datetime.combine(created, datetime.min.time(), tzinfo=timezone.utc) + timedelta(
                seconds=rng.randrange(9 * 3600, 19 * 3600))
        meta.append(("mlp_current_step", str(step)))
        keys.extend(history)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    limit = math.exp(-mean)
    k, product = 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _schema_present(engine: sa.Engine, prefix: str) -> bool:
    return sa.inspect(engine).has_table(f"{prefix}memberlux_term_keys")


def seed_site(
    engine: sa.Engine,
    *,
    users: int,
    levels: int,
    seed: int,
    today: date,
    prefix: str = "wp_",
    base_prefix: str | None = None,
    progress: ProgressCallback | None = None,
    timezone_string: str = "Europe/Moscow",
    webhook_url: str = DEFAULT_WEBHOOK_URL,
    program_webhook_url: str = DEFAULT_PROGRAM_WEBHOOK_URL,
    chunk_size: int = 5000,
) -> SeedSummary:
    """Fill an empty WordPress + MemberLux site with realistic, reproducible data.

    ``users`` learners (staff accounts come on top), ``levels`` access levels. The schema is created
    when missing; a site that already has users is refused rather than mixed with. ``webhook_url`` (the
    MemberLux webhook) and ``program_webhook_url`` (the legacy program's notices) point at a CRM; ''
    seeds neither. ``progress`` is
    called as ``progress(stage, done, total)``.
    """
    if users < 0 or levels < 1:
        raise ValueError("seed_site needs users >= 0 and levels >= 1")
    base = base_prefix or prefix
    started = time.perf_counter()
    if not _schema_present(engine, prefix):
        create_site_schema(engine, prefix, base_prefix)
    with engine.connect() as conn:
        if conn.dialect.name == "mysql":
            # WordPress's session mode: zero dates are legal (wpschema does the same).
            conn.exec_driver_sql("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")
        existing = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM {conn.dialect.identifier_preparer.quote(base + 'users')}").scalar()
        if existing:
            raise ValueError(f"{base}users already has {existing} rows; seed_site only fills an empty site")
        builder = _SiteBuilder(conn, users=users, levels=levels, seed=seed, today=today, prefix=prefix,
                               base_prefix=base, timezone_string=timezone_string, webhook_url=webhook_url,
                               program_webhook_url=program_webhook_url,
                               progress=progress, chunk=chunk_size)
        builder._tick("site", 0, 1)
        builder.build_staff()
        builder.build_terms_and_levels()
        home_id = builder.build_posts()
        builder.build_options(home_id)
        builder.build_hooks()
        builder.build_unused_keys()
        builder.bulk.flush_all()
        builder._tick("site", 1, 1)
        builder.build_learners()
        builder.bulk.flush_all()
        conn.commit()
    summary = builder.summary
    if f"{prefix}memberlux_certificate" in builder.bulk.skipped:
        summary.certificates = summary.auto_certificates = summary.manual_certificates = 0
    summary.skipped_tables = sorted(builder.bulk.skipped)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary
