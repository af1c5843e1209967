"""The admin pages fit a phone, a tablet and a laptop, in Russian and English, in a real browser.

For widths 390, 768 and 1366 px and both languages, the main pages (status, the monitor's overview, a
level's sleepers, a learner, grants and a grant, the reminders' history, a letter and the digests,
programs and a program's form, webhooks and their deliveries, and a 404) are visited signed in; on each,
nothing sticks out to the right of the screen except inside a table's scroll wrapper, a table's "nothing
found" text is not cut by its edge, and every section of the top bar, the language switch and Sign out
stay on the bar and on the screen. At 1366 px the reminders' history fits without scrolling sideways.
Screenshots: ``test-artifacts/browser/40-<page>-<width>-<lang>.png``.

The browser, the served demo site and the skip policy are those of ``tests/monitor/test_browser.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from sidecar.bridge.auth import Principal
from sidecar.bridge.parsers import parse_grant_body
from sidecar.bridge.service import BridgeService, IntakeContext
from sidecar.monitor.service import MonitorService, SleeperQuery
from sidecar.programs.legacy import apply_import, plan_import
from sidecar.store.db import unit_of_work
from sidecar.store.reminder_models import Reminder
from sidecar.webhooks.endpoints import EndpointForm, save
from sidecar.webhooks.events import emit_test
from tests.browser_support import sign_in
from tests.monitor.test_browser import BUSY_LEVEL, _shot, browser, served  # noqa: F401 - fixtures used by name

WIDTHS = (390, 768, 1366)
LANGUAGES = ("ru", "en")

# Anything wider than the screen must sit inside one of these, which scroll sideways on their own.
_OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const inScroller = (element) => {
    for (let up = element.parentElement; up && up !== document.body; up = up.parentElement) {
      if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(up).overflowX)) return true;
    }
    return false;
  };
  const out = [];
  for (const element of document.body.querySelectorAll('*')) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if ((box.right > width + 1 || box.left < -1) && !inScroller(element)) {
      const classes = typeof element.className === 'string' ? element.className.trim().replace(/\\s+/g, '.') : '';
      out.push(`${element.tagName.toLowerCase()}${classes ? '.' + classes : ''} ${Math.round(box.left)}..${Math.round(box.right)}`);
    }
  }
  return {page: document.documentElement.scrollWidth, width, out: out.slice(0, 8)};
}"""


def _fill_the_store(runtime) -> dict[str, str]:
    """Grants, reminder letters with long addresses, programs, a webhook endpoint with deliveries; the
    pages' addresses by name."""
    service = MonitorService(runtime)
    sleepers = list(service.iterate(SleeperQuery(levels=(BUSY_LEVEL,))))[:30]
    now = runtime.clock.now()
    bridge = BridgeService(runtime)
    context = IntakeContext(channel="api", principal=Principal("api_key", "crm"), source_ip="203.0.113.5")
    grant_ids = []
    for n, row in enumerate(sleepers[:12]):
        body = {"user": {"email": row.email}, "grant": {"term_id": BUSY_LEVEL, "duration": 1, "units": "months"},
                "external_id": f"amo-deal-2026-11-{n:04d}-renewal-of-the-yoga-course", "source": "crm-layout"}
        grant_ids.append(bridge.accept(parse_grant_body(body), context).grant.id)
    states = ("sent", "failed", "unknown", "skipped", "planned")
    with unit_of_work(runtime.sessions) as session:
        for n, row in enumerate(sleepers):
            state = states[n % len(states)]
            session.add(Reminder(
                user_id=row.user_id, term_id=BUSY_LEVEL, expired_on=row.expired_on, step=1 + n % 3, state=state,
                reason={"failed": "smtp_permanent", "skipped": "unsubscribed", "unknown": "no_reply"}.get(state, ""),
                due_on=row.expired_on + timedelta(days=3), planned_at=now, updated_at=now, attempts=n % 4,
                to_address=f"{row.email.split('@')[0]}.very.long.mailbox.name@subdomain.example-school.ru",
                message_id=f"<1764230441{n:02d}.12345.8871@mail.example-school.ru>" if state != "planned" else None,
                sent_at=now - timedelta(hours=n) if state in ("sent", "unknown") else None,
                last_error="550 5.1.1 The email account that you tried to reach does not exist" if state == "failed" else ""))
    with unit_of_work(runtime.sessions) as session:
        letter_id = session.scalar(sa.select(Reminder.id).where(Reminder.state == "failed").limit(1))
    plan = plan_import(runtime)
    assert not plan.blocking, plan.blocking
    apply_import(runtime, plan, actor="layout-test")
    endpoint = save(runtime, EndpointForm(name="CRM (amoCRM, воронка «Продления»)",
                                          url="https://93.184.215.14/hooks/sidecar/incoming/very/long/path",
                                          description="Продления и сертификаты в воронку CRM"), actor="layout-test")
    with unit_of_work(runtime.sessions) as session:
        for n in range(6):
            emit_test(session, endpoint.id, now - timedelta(minutes=n), actor="layout-test")
    return {
        "dashboard": "/",
        "status": "/status",
        "monitor": "/monitor",
        "sleepers": f"/monitor/sleepers?level={BUSY_LEVEL}",
        "learner": f"/monitor/users/{sleepers[0].user_id}",
        "grants": "/admin/grants",
        "grant": f"/admin/grants/{grant_ids[0]}",
        "reminders": "/reminders",
        "letter": f"/reminders/letters/{letter_id}",
        "programs": "/programs",
        "program-form": "/programs/new",
        "webhooks": "/webhooks",
        "deliveries": f"/webhooks/{endpoint.id}/deliveries",
        "digests": "/reminders/digests",
        "404": "/no/such/page",
    }


def _bar_problems(page, width: int) -> list[str]:
    """Items of the top bar that are off the screen or off the bar."""
    bar = page.locator("header.top").bounding_box()
    items = page.locator("header.top nav a, header.top .lang, header.top .account button").all()
    problems = [] if len(items) >= 8 else [f"only {len(items)} items on the top bar"]
    for item in items:
        box = item.bounding_box()
        if box is None or box["x"] < 0 or box["x"] + box["width"] > width \
                or box["y"] < bar["y"] or box["y"] + box["height"] > bar["y"] + bar["height"]:
            problems.append(f"{item.inner_text()!r} at {box}")
    return problems


def _watch_for_errors(page) -> list[str]:
    """Script errors and CSP violations, and every failed load (the favicon's too) but the 404 visited."""
    errors: list[str] = []

    def console(message) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    def response(answer) -> None:
        if answer.status >= 400 and "/no/such/page" not in answer.url:
            errors.append(f"{answer.status} {answer.url}")

    page.on("console", console)
    page.on("response", response)
    return errors


# The text of a table's "nothing found" row, where it is cut by the edge of its scroller (or the screen).
_EMPTY_CUT = """() => [...document.querySelectorAll('table.grid td.empty')].filter((cell) => {
  const range = document.createRange();
  range.selectNodeContents(cell);
  const text = range.getBoundingClientRect();
  const wrap = cell.closest('.grid-wrap') || document.documentElement;
  const box = wrap.getBoundingClientRect();
  return text.width > 0 && (text.left < box.left - 1 || text.right > Math.min(box.right, window.innerWidth) + 1);
}).map((cell) => cell.innerText.trim())"""


def _history_scrolls_sideways(page) -> bool:
    return page.evaluate("""() => { const wrap = document.querySelector('table.reminders').closest('.grid-wrap');
                                     return wrap.scrollWidth > wrap.clientWidth + 1; }""")


@pytest.mark.slow
def test_main_pages_fit_every_width_in_both_languages(browser, served):  # noqa: F811 - the imported fixtures
    base_url, runtime = served
    pages = _fill_the_store(runtime)
    context = browser.new_context(base_url=base_url, viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    errors = _watch_for_errors(page)
    failures: list[str] = []
    try:
        sign_in(page)
        for language in LANGUAGES:
            page.goto(f"/?lang={language}")  # remembered in a cookie for the pages below
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 900})
                for name, path in pages.items():
                    answer = page.goto(path)
                    expected = 404 if name == "404" else 200
                    if answer is None or answer.status != expected:
                        failures.append(f"{name} {width} {language}: HTTP {answer and answer.status}")
                        continue
                    where = f"{name} at {width} px, {language}"
                    if page.locator("html").get_attribute("lang") != language:
                        failures.append(f"{where}: not in {language}")
                    found = page.evaluate(_OVERFLOW)
                    if found["page"] > width or found["out"]:
                        failures.append(f"{where}: page {found['page']} px wide; outside a scroller: {found['out']}")
                    failures.extend(f"{where}: top bar item {problem}" for problem in _bar_problems(page, width))
                    failures.extend(f"{where}: empty table's text cut: {text!r}" for text in page.evaluate(_EMPTY_CUT))
                    if name == "reminders" and width == 1366 and _history_scrolls_sideways(page):
                        failures.append(f"{where}: the history scrolls sideways on a laptop")
                    _shot(page, f"40-{name}-{width}-{language}")
        assert not failures, "\n".join(failures)
        assert not errors, errors  # no CSP violations, script errors or failed loads (the favicon included)
    finally:
        context.close()
