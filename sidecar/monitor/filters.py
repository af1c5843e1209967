"""The sleepers report's filters as URL parameters: one parser for the table, its CSV export and the API.

``level`` (repeatable), ``expired_from``, ``expired_to`` (both inclusive, on the expiry day),
``within`` (expired in the last 7, 30 or 90 days), ``search``, ``sort`` (absent: the configured column),
``desc`` (``1`` or ``0``; absent: the configured direction for the configured column, else ascending),
``after`` / ``before`` (page cursors: next / previous page), ``limit`` (the page offers 20, 50 and 100).
The pages drop an unusable parameter and say so; the API answers 400 naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from flask import url_for

from sidecar.domain.ids import is_id
from sidecar.monitor.service import SORTS, SleeperQuery
from sidecar.web.i18n import gettext
from sidecar.web.pages import query_day

PER_PAGE = 20             # the legacy report's page size
PAGE_SIZES = (20, 50, 100)   # the page's choice
WITHIN_DAYS = (7, 30, 90)    # the quick filter "expired in the last N days"
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
        return _MESSAGES[self.code](language, self.field, self.value)


_MESSAGES = {
    "bad_date": lambda lang, f, v: gettext("{field}: not a date: {value} (use YYYY-MM-DD); "
                                           "the filter was ignored.", lang, field=f, value=v),
    "bad_level": lambda lang, f, v: gettext("{field}: not a level id: {value}; the filter was ignored.", lang, field=f, value=v),
    "unknown_level": lambda lang, f, v: gettext("{field}: there is no level {value} on the site; "
                                                "the filter was ignored.", lang, field=f, value=v),
    "bad_range": lambda lang, f, v: gettext("{field}: the window ends ({value}) before it starts; "
                                            "the end was ignored.", lang, field=f, value=v),
    "too_long": lambda lang, f, v: gettext("{field}: the search text is longer than {value} "
                                           "characters and was cut.", lang, field=f, value=v),
    "bad_sort": lambda lang, f, v: gettext("{field}: cannot sort by {value} (use expired_on, "
                                           "days_since, name, email or level).", lang, field=f, value=v),
    "bad_flag": lambda lang, f, v: gettext("{field}: expected 1 or 0, got {value}.", lang, field=f, value=v),
    "bad_limit": lambda lang, f, v: gettext("{field}: page size {value} is out of range; the default was used.", lang, field=f, value=v),
    "bad_within": lambda lang, f, v: gettext("{field}: expected 7, 30 or 90 days, got {value}; "
                                             "the filter was ignored.", lang, field=f, value=v),
    "two_cursors": lambda lang, f, v: gettext("{field}: a link names both the next and the previous "
                                              "page; the next page was shown.", lang, field=f),
    "bad_cursor": lambda lang, f, v: gettext("The page link is not valid (or was made for another "
                                             "order); showing the first page.", lang, field=f, value=v),
}


@dataclass(frozen=True)
class Filters(SleeperQuery):
    """The service's query as the page's URL carries it (the page size default differs per view)."""

    default_limit: int = PER_PAGE
    default_sort: str = "expired_on"
    default_descending: bool = False

    def default_descending_for(self, sort: str) -> bool:
        """The direction a sort has when the URL names none: the configured one for the configured
        column, ascending for any other (so ``sort=email`` reads A to Z, as it always did)."""
        return self.default_descending if sort == self.default_sort else False

    def query(self, *, paged: bool = True) -> SleeperQuery:
        return self if paged else replace(self, after=None, before=None)

    def args(self, **changes: Any) -> dict[str, Any]:
        """The filters as URL parameters, defaults left out (a list value repeats the parameter)."""
        f = replace(self, **changes)
        values: dict[str, Any] = {
            "level": [str(t) for t in f.levels],
            "expired_from": f.expired_from.isoformat() if f.expired_from else "",
            "expired_to": f.expired_to.isoformat() if f.expired_to else "",
            "within": str(f.expired_within) if f.expired_within is not None else "",
            "search": f.search,
            "sort": f.sort if f.sort != f.default_sort else "",
            "desc": ("1" if f.descending else "0") if f.descending != f.default_descending_for(f.sort) else "",
            "after": f.after or "",
            "before": f.before or "",
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
                  known_levels: Iterable[int] | None = None,
                  default_order: tuple[str, bool] = ("expired_on", False)) -> tuple[Filters, list[Problem]]:
    """Filters from a query string (a MultiDict); every unusable parameter becomes a :class:`Problem`.

    ``default_order``: ``(sort, descending)`` when the URL names none (``web.sleepers_order``). Any page
    size up to ``max_limit`` is taken: the page offers :data:`PAGE_SIZES`, a hand-written link may ask more.
    """
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
    within = None
    raw_within = (args.get("within") or "").strip()
    if raw_within:
        if raw_within.isascii() and raw_within.isdecimal() and int(raw_within) in WITHIN_DAYS:
            within = int(raw_within)
        else:
            problems.append(Problem("within", "bad_within", raw_within[:40]))
    search = (args.get("search") or "").strip()
    if len(search) > MAX_SEARCH:
        problems.append(Problem("search", "too_long", str(MAX_SEARCH)))
        search = search[:MAX_SEARCH]
    default_sort, default_descending = default_order
    sort = (args.get("sort") or default_sort).strip()
    if sort not in SORTS:
        problems.append(Problem("sort", "bad_sort", sort[:40]))
        sort = default_sort
    raw_desc = (args.get("desc") or "").strip().lower()
    natural = default_descending if sort == default_sort else False
    descending = raw_desc in TRUE_WORDS if raw_desc else natural
    if raw_desc not in TRUE_WORDS | FALSE_WORDS:
        problems.append(Problem("desc", "bad_flag", raw_desc[:40]))
        descending = natural
    limit = default_limit
    raw_limit = (args.get("limit") or "").strip()
    if raw_limit:
        if raw_limit.isascii() and raw_limit.isdecimal() and len(raw_limit) <= 9 and 1 <= int(raw_limit) <= max_limit:
            limit = int(raw_limit)
        else:
            problems.append(Problem("limit", "bad_limit", raw_limit[:40]))
    after = (args.get("after") or "").strip() or None
    before = (args.get("before") or "").strip() or None
    if after and before:
        problems.append(Problem("before", "two_cursors"))
        before = None
    filters = Filters(levels=tuple(levels), expired_from=expired_from, expired_to=expired_to, search=search,
                      sort=sort, descending=descending, after=after, before=before, limit=limit,
                      expired_within=within, default_limit=default_limit, default_sort=default_sort,
                      default_descending=default_descending)
    return filters, problems
