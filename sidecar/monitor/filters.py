"""The sleepers report's filters as URL parameters: one parser for the table, its CSV export and the API.

``level`` (repeatable), ``expired_from``, ``expired_to`` (both inclusive, on the expiry day), ``search``,
``sort``, ``desc``, ``after`` (page cursor), ``limit``. The pages drop an unusable parameter and say so;
the API answers 400 naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from flask import url_for

from sidecar.domain.ids import is_id
from sidecar.monitor.service import SORTS, SleeperQuery
from sidecar.web.i18n import translate
from sidecar.web.pages import query_day

PER_PAGE = 20             # the legacy report's page size
MAX_PAGE = 200
API_PER_PAGE = 100
API_MAX_PAGE = 500
MAX_SEARCH = 200
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True)
class Problem:
    """One unusable parameter: the field, an i18n code and the value as sent (shortened)."""

    field: str
    code: str
    value: str = ""

    def message(self, language: str | None = None) -> str:
        return translate(f"monitor.error.{self.code}", language, field=self.field, value=self.value)


@dataclass(frozen=True)
class Filters(SleeperQuery):
    """The service's query as the page's URL carries it (the page size default differs per view)."""

    default_limit: int = PER_PAGE

    def query(self, *, paged: bool = True) -> SleeperQuery:
        return self if paged else replace(self, after=None)

    def args(self, **changes: Any) -> dict[str, Any]:
        """The filters as URL parameters, defaults left out (a list value repeats the parameter)."""
        f = replace(self, **changes)
        values: dict[str, Any] = {
            "level": [str(t) for t in f.levels],
            "expired_from": f.expired_from.isoformat() if f.expired_from else "",
            "expired_to": f.expired_to.isoformat() if f.expired_to else "",
            "search": f.search,
            "sort": f.sort if f.sort != "expired_on" else "",
            "desc": "1" if f.descending else "",
            "after": f.after or "",
            "limit": str(f.limit) if f.limit != f.default_limit else "",
        }
        return {key: value for key, value in values.items() if value}

    def url(self, endpoint: str = ".sleepers", **changes: Any) -> str:
        return url_for(endpoint, **self.args(**changes))


def _parse_day(args: Mapping[str, str], name: str, problems: list[Problem]) -> date | None:
    day, unusable = query_day(args, name)
    if unusable is not None:
        problems.append(Problem(name, "bad_date", unusable))
    return day


def parse_filters(args: Any, *, default_limit: int = PER_PAGE, max_limit: int = MAX_PAGE,
                  known_levels: Iterable[int] | None = None) -> tuple[Filters, list[Problem]]:
    """Filters from a query string (a MultiDict); every unusable parameter becomes a :class:`Problem`."""
    problems: list[Problem] = []
    known = set(known_levels) if known_levels is not None else None
    levels: list[int] = []
    for raw in args.getlist("level"):
        for part in raw.split(","):  # "level=7,9" is accepted too, for hand-written API calls
            part = part.strip()
            if not part:
                continue
            # An id a database column can hold (a larger one was an OverflowError/DataError: a 500).
            if not (part.isascii() and part.isdecimal() and len(part) <= 19) or not is_id(int(part)):
                problems.append(Problem("level", "bad_level", part[:40]))
            elif known is not None and int(part) not in known:
                problems.append(Problem("level", "unknown_level", part))
            elif int(part) not in levels:
                levels.append(int(part))
    expired_from = _parse_day(args, "expired_from", problems)
    expired_to = _parse_day(args, "expired_to", problems)
    if expired_from and expired_to and expired_from > expired_to:
        problems.append(Problem("expired_to", "bad_range", expired_to.isoformat()))
        expired_to = None
    search = (args.get("search") or "").strip()
    if len(search) > MAX_SEARCH:
        problems.append(Problem("search", "too_long", str(MAX_SEARCH)))
        search = search[:MAX_SEARCH]
    sort = (args.get("sort") or "expired_on").strip()
    if sort not in SORTS:
        problems.append(Problem("sort", "bad_sort", sort[:40]))
        sort = "expired_on"
    raw_desc = (args.get("desc") or "").strip().lower()
    descending = raw_desc in TRUE_WORDS
    if raw_desc not in TRUE_WORDS | FALSE_WORDS:
        problems.append(Problem("desc", "bad_flag", raw_desc[:40]))
    limit = default_limit
    raw_limit = (args.get("limit") or "").strip()
    if raw_limit:
        if raw_limit.isdecimal() and len(raw_limit) <= 9 and 1 <= int(raw_limit) <= max_limit:
            limit = int(raw_limit)
        else:
            problems.append(Problem("limit", "bad_limit", raw_limit[:40]))
    after = (args.get("after") or "").strip() or None
    filters = Filters(levels=tuple(levels), expired_from=expired_from, expired_to=expired_to, search=search,
                      sort=sort, descending=descending, after=after, limit=limit, default_limit=default_limit)
    return filters, problems


