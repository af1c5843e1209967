"""The data generator: deterministic, realistic, and faithful to MemberLux's storage rules."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import Counter, defaultdict
from datetime import date, datetime

import bcrypt
import phpserialize
import pytest
import sqlalchemy as sa

from sidecar.devstack import seed as seed_module
from sidecar.devstack.seed import (
    DEMO_ADMIN_LOGIN,
    DEMO_ADMIN_PASSWORD,
    DEMO_LEARNER_PASSWORD,
    UNUSED_KEYS_PER_LEVEL,
    seed_site,
)
from sidecar.devstack.site import build_demo_site
from sidecar.domain.access import add_duration
from tests.databases import fresh_database

TODAY = date(2026, 3, 15)
SOURCES = {"purchase", "free_item", "free_registration_form", "bulk_operations_reg", "bulk_operations_add",
           "auto_registration", "activation_page", "profile_page_self", "profile_page_admin", "program_flow", ""}

_TABLES = ["users", "usermeta", "options", "terms", "term_taxonomy", "termmeta", "term_relationships", "posts",
           "postmeta", "memberlux_term_keys", "memberlux_keys_meta", "memberlux_certificate",
           "memberlux_certificate_templates", "memberlux_hook", "memberlux_hook_action"]


def _norm(value):
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return None if value is None else str(value)


def dump(engine: sa.Engine, *, normalise: bool = False) -> dict[str, list[tuple]]:
    md = sa.MetaData()
    md.reflect(engine, only=[f"wp_{name}" for name in _TABLES])
    out = {}
    with engine.connect() as conn:
        for name in _TABLES:
            table = md.tables[f"wp_{name}"]
            # created_at is server-maintained (core.md 1.3) and never written by the seed.
            columns = [c for c in table.c if c.name != "created_at" or name != "memberlux_term_keys"]
            rows = conn.execute(sa.select(*columns).order_by(*table.primary_key.columns)).all()
            out[name] = [tuple(_norm(v) for v in row) if normalise else tuple(row) for row in rows]
    return out


def _d(value) -> str | None:
    return _norm(value)


def _unserialize(text: str):
    return phpserialize.loads(text.encode("utf-8"), decode_strings=True)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def seeded(request, tmp_path_factory):
    """One site seeded for real per backend, shared by the tests below: they only read it."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('seeded') / 'wordpress.sqlite'}"
        else:
            url = stack.enter_context(fresh_database(request.getfixturevalue("mariadb_admin_url")))
        engine = sa.create_engine(url)
        stack.callback(engine.dispose)
        yield engine, seed_site(engine, users=400, levels=7, seed=11, today=TODAY)


# --------------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_byte_identical_rows(tmp_path):
    engines = [sa.create_engine(f"sqlite:///{tmp_path / f'site{n}.sqlite'}") for n in range(2)]
    for engine in engines:
        seed_site(engine, users=150, levels=5, seed=3, today=TODAY)
    first, second = (dump(engine) for engine in engines)
    assert first == second
    assert len(first["memberlux_term_keys"]) > 5 * UNUSED_KEYS_PER_LEVEL


def test_different_seed_or_day_gives_different_rows(tmp_path):
    dumps = []
    for n, (seed, today) in enumerate([(3, TODAY), (4, TODAY), (3, date(2026, 3, 16))]):
        engine = sa.create_engine(f"sqlite:///{tmp_path / f'site{n}.sqlite'}")
        seed_site(engine, users=150, levels=5, seed=seed, today=today)
        dumps.append(dump(engine))
    assert dumps[0]["users"] != dumps[1]["users"]
    assert dumps[0]["memberlux_term_keys"] != dumps[1]["memberlux_term_keys"]
    assert dumps[0]["memberlux_term_keys"] != dumps[2]["memberlux_term_keys"]


def test_same_data_on_every_backend(site_engine, tmp_path):
    """The backend under test holds exactly what a SQLite build of the same seed holds."""
    reference = sa.create_engine(f"sqlite:///{tmp_path / 'reference.sqlite'}")
    seed_site(reference, users=120, levels=4, seed=5, today=TODAY)
    seed_site(site_engine, users=120, levels=4, seed=5, today=TODAY)
    assert dump(site_engine, normalise=True) == dump(reference, normalise=True)


def test_refuses_a_site_with_users(site_engine):
    seed_site(site_engine, users=5, levels=1, seed=1, today=TODAY)
    with pytest.raises(ValueError, match="already has"):
        seed_site(site_engine, users=5, levels=1, seed=1, today=TODAY)


def test_build_demo_site_fresh_rebuilds(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    stages = []
    first = build_demo_site(url, users=30, levels=3, seed=1, today=TODAY, progress=lambda *a: stages.append(a))
    with pytest.raises(ValueError):
        build_demo_site(url, users=30, levels=3, seed=1, today=TODAY)
    again = build_demo_site(url, users=30, levels=3, seed=1, today=TODAY, fresh=True)
    assert again.keys == first.keys and again.certificates == first.certificates
    assert ("learners", 30, 30) in stages


def test_key_volume_scales_to_five_per_user(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'scale.sqlite'}")
    summary = seed_site(engine, users=3000, levels=4, seed=9, today=TODAY)
    assert 0.85 <= summary.keys / (5 * summary.learners) <= 1.15
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM wp_memberlux_term_keys").scalar() == summary.keys


# --------------------------------------------------------------------------------------------------
# Realism invariants (on every backend)


def test_unused_keys_per_level(seeded):
    engine, summary = seeded
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT term_id, COUNT(*) FROM wp_memberlux_term_keys WHERE status = 'new' AND user_id IS NULL "
            "AND key_type = 'wpm_term_keys' AND date_start = '0000-00-00' AND date_end = '0000-00-00' "
            "AND date_registered IS NULL AND duration = 12 AND units = 'months' AND sent = 0 GROUP BY term_id")).all()
        counts = {int(term): n for term, n in rows}
        resaved = conn.execute(sa.text(
            "SELECT date_start, date_end, sent, user_id FROM wp_memberlux_term_keys "
            "WHERE status = 'new' AND date_start <> '0000-00-00'")).all()
    for level_id in summary.level_ids:
        assert counts[level_id] == UNUSED_KEYS_PER_LEVEL
    # The deleted level's pool is still there, orphaned.
    assert counts[summary.deleted_level_id] == UNUSED_KEYS_PER_LEVEL
    assert resaved
    for start, end, sent, user_id in resaved:
        assert _d(start) == _d(end) and re.fullmatch(r"20[3-4]\d-01-01", _d(start))
        assert sent == 1 and user_id is None


def test_activated_rows_are_consistent(seeded):
    engine, summary = seeded
    with engine.connect() as conn:
        keys = conn.execute(sa.text("SELECT * FROM wp_memberlux_term_keys WHERE status <> 'new'")).mappings().all()
        meta = {int(r.key_id): r for r in conn.execute(sa.text("SELECT * FROM wp_memberlux_keys_meta")).all()}
        all_codes = [r[0] for r in conn.execute(sa.text("SELECT `key` FROM wp_memberlux_term_keys")
                                                if engine.dialect.name == "mysql"
                                                else sa.text('SELECT "key" FROM wp_memberlux_term_keys')).all()]
    assert all(len(code) == 72 and code.isalnum() and code.isascii() for code in all_codes)
    assert len(keys) == summary.activated_keys
    assert all(row["user_id"] is not None for row in keys)
    flags = Counter()
    for row in keys:
        start, end = date.fromisoformat(_d(row["date_start"])), date.fromisoformat(_d(row["date_end"]))
        assert row["units"] in ("months", "days")
        key_meta = meta.get(int(row["id"]))
        source = key_meta.source if key_meta is not None else None
        if source != "program_flow":
            # MemberLux's arithmetic, unlimited rows included (their end is merely meaningless).
            assert end == add_duration(start, int(row["duration"]), row["units"]), dict(row)
        flags["unlimited"] += row["is_unlimited"] == 1
        flags["basket"] += row["key_type"] == "wpm_keys_basket"
        flags["banned"] += row["is_banned"] == 1
        flags["registration_path"] += row["date_registered"] is None
        flags["duration0"] += int(row["duration"]) == 0
        flags["days"] += row["units"] == "days"
        flags["future_start"] += start > TODAY
        flags["used_past_end"] += (row["status"] == "used" and not row["is_unlimited"] and end < TODAY
                                   and row["key_type"] == "wpm_term_keys" and not row["is_banned"])
        flags["expired"] += row["status"] == "expired"
        flags["without_keys_meta"] += key_meta is None
        if row["status"] == "expired":
            assert row["is_unlimited"] == 0 and row["key_type"] == "wpm_term_keys"
        if row["date_registered"] is not None and source not in ("program_flow",):
            assert start >= date.fromisoformat(_d(row["date_registered"]))
    for flag in ("unlimited", "basket", "banned", "registration_path", "duration0", "days", "future_start",
                 "used_past_end", "expired", "without_keys_meta"):
        assert flags[flag] > 0, flag
    assert set(meta) <= {int(row["id"]) for row in keys}
    assert {m.source for m in meta.values()} <= SOURCES
    assert "program_flow" in {m.source for m in meta.values()}
    assert any(m.utm_source for m in meta.values())
    for m in meta.values():
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", _d(m.activation_datetime))


def test_stacked_renewals_start_at_previous_end(seeded):
    engine, _summary = seeded
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT k.user_id, k.term_id, k.date_start, k.date_end, k.date_registered, k.is_unlimited "
            "FROM wp_memberlux_term_keys k LEFT JOIN wp_memberlux_keys_meta m ON m.key_id = k.id "
            "WHERE k.status <> 'new' AND k.is_banned = 0 AND k.key_type = 'wpm_term_keys' "
            "AND (m.source IS NULL OR m.source <> 'program_flow') ORDER BY k.id")).all()
    by_pair = defaultdict(list)
    for row in rows:
        by_pair[(row.user_id, row.term_id)].append(row)
    stacked = lapsed = 0
    for chain in by_pair.values():
        for previous, current in zip(chain, chain[1:], strict=False):
            if current.date_registered is None or previous.is_unlimited:
                continue
            registered = date.fromisoformat(_d(current.date_registered))
            prev_end = date.fromisoformat(_d(previous.date_end))
            start = date.fromisoformat(_d(current.date_start))
            assert start == max(registered, prev_end)
            stacked += start == prev_end and registered < prev_end
            lapsed += start == registered and registered > prev_end
    assert stacked > 0 and lapsed > 0


def test_auto_certificates_match_activations(seeded):
    engine, summary = seeded
    auto = set(summary.auto_certificate_levels)
    assert auto
    with engine.connect() as conn:
        keys = conn.execute(sa.text(
            "SELECT k.user_id, k.term_id, k.date_start, k.date_registered, m.activation_datetime "
            "FROM wp_memberlux_term_keys k LEFT JOIN wp_memberlux_keys_meta m ON m.key_id = k.id "
            "WHERE k.status <> 'new'")).all()
        certs = conn.execute(sa.text("SELECT * FROM wp_memberlux_certificate")).mappings().all()
        roles = {int(uid): _unserialize(value) for uid, value in conn.execute(sa.text(
            "SELECT user_id, meta_value FROM wp_usermeta WHERE meta_key = 'wp_capabilities'")).all()}
    activations = Counter()
    for row in keys:
        if row.term_id not in auto:
            continue
        if row.activation_datetime is not None:
            day = _d(row.activation_datetime)[:10]
        else:
            day = _d(row.date_registered) or _d(row.date_start)
        activations[(int(row.user_id), int(row.term_id), day)] += 1
    issued = Counter()
    for cert in certs:
        assert cert["number"] == f"{int(cert['user_id']):05d}"
        assert int(cert["wpmlevel_id"]) not in summary.no_certificate_levels
        assert isinstance(_unserialize(cert["custom_fields"]), dict)
        if int(cert["wpmlevel_id"]) in auto and _d(cert["date_issue"]) == _d(cert["create_date"]):
            issued[(int(cert["user_id"]), int(cert["wpmlevel_id"]), _d(cert["create_date"]))] += 1
    assert activations
    for activation, count in activations.items():
        assert issued[activation] >= count, activation
    auto_rows = [c for c in certs if int(c["wpmlevel_id"]) in auto]
    responsible = {int(c["responsible_person"]) for c in auto_rows}
    assert 0 in responsible and summary.admin_id in responsible
    assert any(int(c["responsible_person"]) == int(c["user_id"]) for c in auto_rows)
    # Manual certificates come from staff, some back-dated.
    manual = [c for c in certs if int(c["wpmlevel_id"]) in summary.manual_certificate_levels]
    assert manual
    for cert in manual:
        issuer_roles = roles[int(cert["responsible_person"])]
        assert "administrator" in issuer_roles or "coach" in issuer_roles
    assert any(_d(c["date_issue"]) != _d(c["create_date"]) for c in manual)
    assert len(certs) == summary.certificates


def test_serialized_values_and_settings(seeded):
    engine, summary = seeded
    with engine.connect() as conn:
        options = dict(conn.execute(sa.text("SELECT option_name, option_value FROM wp_options")).all())
        termmeta = defaultdict(dict)
        for term_id, key, value in conn.execute(sa.text("SELECT term_id, meta_key, meta_value FROM wp_termmeta")):
            termmeta[int(term_id)][key] = value
        caps = conn.execute(sa.text(
            "SELECT user_id, meta_value FROM wp_usermeta WHERE meta_key = 'wp_capabilities'")).all()
        blocked = conn.execute(sa.text(
            "SELECT COUNT(*) FROM wp_usermeta WHERE meta_key = 'wpm_status' AND meta_value = 'inactive'")).scalar()
        taxonomy = dict(conn.execute(sa.text(
            "SELECT term_id, parent FROM wp_term_taxonomy WHERE taxonomy = 'wpm-levels'")).all())
    assert options["wpm_version"] == "2.97" and options["memberlux_db_version"] == "0.7.9.7"
    assert options["mblc_version"] and options["mb_api_db_version"] == "2.1"
    assert options["timezone_string"] == "Europe/Moscow" and options["gmt_offset"] == "3"
    main = _unserialize(options["wpm_main_options"])
    assert main["mblp"]["auto_activation"] == "on" and main["home_id"] == 1
    roles = _unserialize(options["wp_user_roles"])
    assert roles["administrator"]["capabilities"]["manage_options"] is True
    assert "manage_options" not in roles["customer"]["capabilities"]
    assert b'a:1:{s:8:"customer";b:1;}' in {value.encode() for _uid, value in caps}
    assert all(isinstance(_unserialize(value), dict) for _uid, value in caps)
    assert blocked == summary.blocked_users > 0
    for level_id in summary.level_ids:
        settings = _unserialize(options[f"taxonomy_term_{level_id}"])
        assert "letter_1_days" in settings
    assert {int(k) for k in taxonomy} == set(summary.level_ids)
    assert {int(child): int(parent) for child, parent in taxonomy.items() if int(parent)} == summary.parent_of
    for level_id in summary.auto_certificate_levels:
        assert termmeta[level_id]["_mblc_has_certificate"] == "yes"
        assert termmeta[level_id]["_mblc_how_to_issue"] == "auto"
    assert any(termmeta[level].get("_mblc_how_to_issue") == "employee" for level in summary.manual_certificate_levels)
    assert any("_mblc_how_to_issue" not in termmeta[level] for level in summary.manual_certificate_levels)
    for level_id in summary.no_certificate_levels:
        assert not any(key.startswith("_mblc_") for key in termmeta[level_id])
    monitored = [meta for meta in termmeta.values() if "mlm_enabled" in meta]
    assert monitored and any(meta["mlm_enabled"] == "1" for meta in monitored)
    assert all("[user_email]" in meta["mlm_email_1_body"] for meta in monitored)
    assert all(key in meta for meta in monitored for key in (
        "mlm_email_3_days", "mlm_email_2_subject", "mlm_admin_days_after_last", "mlm_admin_email", "mlm_admin_body"))


def test_products_and_webhook(seeded):
    engine, summary = seeded
    with engine.connect() as conn:
        postmeta = defaultdict(dict)
        for post_id, key, value in conn.execute(sa.text("SELECT post_id, meta_key, meta_value FROM wp_postmeta")):
            postmeta[int(post_id)][key] = value
        product_types = dict(conn.execute(sa.text(
            "SELECT r.object_id, t.slug FROM wp_term_relationships r JOIN wp_term_taxonomy tt "
            "ON tt.term_taxonomy_id = r.term_taxonomy_id JOIN wp_terms t ON t.term_id = tt.term_id "
            "WHERE tt.taxonomy = 'product_type'")).all())
        hooks = conn.execute(sa.text(
            "SELECT h.destination, a.action FROM wp_memberlux_hook h JOIN wp_memberlux_hook_action a "
            "ON a.hook_id = h.id")).all()
    keyed = [p for p in summary.products if p.product_type == "mbl_key"]
    assert {p.level_id for p in keyed} == set(summary.level_ids)
    for product in keyed:
        meta = postmeta[product.product_id]
        assert product_types[product.product_id] == "mbl_key"
        assert meta["_mbl_key_pin_code_level_id"] == str(product.level_id)
        assert meta["_mbl_key_pin_code_duration"] == str(product.duration)
        assert meta["_mbl_key_pin_code_units"] == product.units
        assert meta["_mbl_key_pin_code_is_unlimited"] == ("on" if product.is_unlimited else "off")
        assert meta["_price"] == str(product.price)
    assert any(p.is_unlimited for p in keyed) and any(p.units == "days" for p in keyed)
    assert (summary.webhook_url, "all") in [tuple(h) for h in hooks]


def test_programs_and_progress(seeded):
    engine, summary = seeded
    assert summary.program_ids and summary.enrolled_users > 0
    with engine.connect() as conn:
        steps_raw = conn.execute(sa.text(
            "SELECT post_id, meta_value FROM wp_postmeta WHERE meta_key = 'mlp_steps'")).all()
        progress = defaultdict(dict)
        for uid, key, value in conn.execute(sa.text(
                "SELECT user_id, meta_key, meta_value FROM wp_usermeta WHERE meta_key IN ('mlp_program_id', 'mlp_current_step', "
                "'mlp_last_certificate_hash')")):
            progress[int(uid)][key] = value
        certs = conn.execute(sa.text("SELECT certificate_id, user_id FROM wp_memberlux_certificate")).all()
        program_posts = conn.execute(sa.text("SELECT ID FROM wp_posts WHERE post_type = 'ml_program'")).scalars().all()
    assert sorted(int(p) for p in program_posts) == sorted(summary.program_ids)
    for _post_id, raw in steps_raw:
        assert raw.startswith("a:") and 's:7:"term_id";i:' in raw
        steps = _unserialize(raw)
        assert list(steps) == list(range(len(steps))) and len(steps) >= 2
        assert steps[0]["duration"] == 1 and steps[0]["units"] == "months"
        assert all(set(step) == {"term_id", "duration", "units"} for step in steps.values())
    hashes = {hashlib.md5(f"{uid}:{cid}".encode()).hexdigest() for cid, uid in certs}
    assert len(progress) == summary.enrolled_users
    advanced = 0
    for meta in progress.values():
        assert int(meta["mlp_program_id"]) in summary.program_ids
        assert meta["mlp_current_step"].isdigit()
        if meta["mlp_last_certificate_hash"]:
            advanced += 1
            assert meta["mlp_last_certificate_hash"] in hashes
    assert advanced > 0


def test_password_hashes(seeded):
    engine, _summary = seeded
    with engine.connect() as conn:
        hashes = dict(conn.execute(sa.text("SELECT user_login, user_pass FROM wp_users")).all())
    admin_hash = hashes[DEMO_ADMIN_LOGIN]
    assert admin_hash.startswith("$wp$2y$10$")
    assert _wp_check(DEMO_ADMIN_PASSWORD, admin_hash) and not _wp_check("wrong", admin_hash)
    formats = Counter(h[:4] if h.startswith("$") else "md5" for h in hashes.values())
    assert formats["$wp$"] and formats["$P$B"]
    assert _wp_check(DEMO_LEARNER_PASSWORD, seed_module._LEARNER_HASH_WP_BCRYPT)
    assert hashlib.md5(DEMO_LEARNER_PASSWORD.encode()).hexdigest() == seed_module._LEARNER_HASH_MD5
    assert _phpass_check(DEMO_LEARNER_PASSWORD, seed_module._LEARNER_HASH_PHPASS)


def _wp_check(password: str, stored: str) -> bool:
    import base64
    import hmac

    prehash = base64.b64encode(hmac.new(b"wp-sha384", password.encode(), hashlib.sha384).digest())
    return bcrypt.checkpw(prehash, stored[3:].encode())


def _phpass_check(password: str, stored: str) -> bool:
    itoa64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    count, salt = 1 << itoa64.index(stored[3]), stored[4:12]
    digest = hashlib.md5((salt + password).encode()).digest()
    for _ in range(count):
        digest = hashlib.md5(digest + password.encode()).digest()
    out, i = "", 0
    while i < 16:
        value = digest[i]
        i += 1
        out += itoa64[value & 0x3F]
        if i < 16:
            value |= digest[i] << 8
        out += itoa64[(value >> 6) & 0x3F]
        if i >= 16:
            break
        i += 1
        if i < 16:
            value |= digest[i] << 16
        out += itoa64[(value >> 12) & 0x3F]
        if i >= 16:
            break
        i += 1
        out += itoa64[(value >> 18) & 0x3F]
    return stored == stored[:12] + out


def test_multisite_prefixes_and_missing_modules(tmp_path):
    from sidecar.devstack.wpschema import create_site_schema

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'multi.sqlite'}")
    create_site_schema(engine, "wp_3_", "wp_", without_modules=("certificates", "webhooks"))
    summary = seed_site(engine, users=60, levels=3, seed=2, today=TODAY, prefix="wp_3_", base_prefix="wp_")
    assert summary.certificates == 0
    assert summary.skipped_tables == ["wp_3_memberlux_certificate", "wp_3_memberlux_certificate_templates",
                                      "wp_3_memberlux_hook", "wp_3_memberlux_hook_action"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM wp_users").scalar() == summary.users
        # On a sub-site the role lives under the site's prefix (core.md 12).
        assert conn.exec_driver_sql(
            "SELECT COUNT(*) FROM wp_usermeta WHERE meta_key = 'wp_3_capabilities'").scalar() == summary.users
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM wp_3_options WHERE option_name = 'wp_3_user_roles'").scalar() == 1
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM wp_3_memberlux_term_keys").scalar() == summary.keys
