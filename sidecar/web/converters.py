"""URL converters: ``<int:...>`` in every route accepts only an id a database column can hold.

Werkzeug's own ``int`` takes any run of digits: ``/monitor/users/99999999999999999999`` reached the
view and failed in the database (OverflowError on SQLite, DataError on MariaDB): a 500. Here a path
id is 1-19 ASCII digits, positive and at most 2**63-1 — anything else is simply no route (404).
"""

from __future__ import annotations

from typing import Any

from werkzeug.routing import IntegerConverter, Map

from sidecar.domain.ids import MAX_ID


class IdConverter(IntegerConverter):
    regex = r"[0-9]{1,19}"

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min", 1)
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)
