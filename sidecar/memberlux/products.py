"""(level, duration, units) -> the WooCommerce ``mbl_key`` product that grants it (read-only).

The real order endpoint takes product ids, not levels (core.md 5.2-5.4): access comes from the
payments add-on, which generates a key from the product's meta. So the bridge must know which
product carries the requested term. Product meta is read from ``postmeta`` (saved through the edit
context: ``_mbl_key_pin_code_is_unlimited`` is ``on``/``off``); explicit overrides from the
configuration win. Products change rarely, so the catalogue is cached for a short while.
"""

from __future__ import annotations

from typing import Any

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from sidecar.memberlux.schema import SiteSchema

PRODUCT_TYPE_TAXONOMY = "product_type"
MBL_KEY_TYPE = "mbl_key"
_META = {
    "_mbl_key_pin_code_level_id": "level_id",
    "_mbl_key_pin_code_duration": "duration",
    "_mbl_key_pin_code_units": "units",
    "_mbl_key_pin_code_is_unlimited": "unlimited",
    "_price": "price",
}
_STATUS_PREFERENCE = {"publish": 0, "private": 1, "draft": 2, "pending": 2, "future": 2}


@dataclass(frozen=True)
class Product:
    product_id: int
    title: str
    status: str
    level_id: int | None
    duration: int
    units: str
    unlimited: bool
    price: str

    def describe(self) -> str:
        # MemberLux stores plural units (days, months, years); one of them reads in the singular.
        units = self.units[:-1] if self.duration == 1 and self.units.endswith("s") else self.units
        term = "unlimited" if self.unlimited else f"{self.duration} {units}"
        return f"#{self.product_id} '{self.title}' ({term}, {self.status})"


@dataclass(frozen=True)
class Override:
    term_id: int
    duration: int
    units: str
    product_id: int


def _int(value: str | None, default: int) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in {"on", "1", "yes", "true"}


class ProductCatalog:
    def __init__(self, engine: sa.Engine, schema: SiteSchema, overrides: Sequence[Override] = (), *,
                 ttl_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.schema = schema
        self.overrides = list(overrides)
        self.ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Product]] | None = None

    def products(self) -> list[Product]:
        """Every ``mbl_key`` product of the site, whatever its status."""
        with self._lock:
            if self._cached and self._clock() - self._cached[0] < self.ttl:
                return self._cached[1]
        loaded = self._load()
        with self._lock:
            self._cached = (self._clock(), loaded)
        return loaded

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def _load(self) -> list[Product]:
        posts, postmeta = self.schema.table("posts"), self.schema.table("postmeta")
        rel, tax, terms = (self.schema.table("term_relationships"), self.schema.table("term_taxonomy"),
                           self.schema.table("terms"))
        typed = (
            sa.select(rel.c.object_id)
            .join(tax, tax.c.term_taxonomy_id == rel.c.term_taxonomy_id)
            .join(terms, terms.c.term_id == tax.c.term_id)
            .where(tax.c.taxonomy == PRODUCT_TYPE_TAXONOMY, terms.c.slug == MBL_KEY_TYPE)
        )
        query = (
            sa.select(posts.c.ID, posts.c.post_title, posts.c.post_status, postmeta.c.meta_key, postmeta.c.meta_value)
            .join(postmeta, postmeta.c.post_id == posts.c.ID)
            .where(posts.c.post_type == "product", posts.c.ID.in_(typed), postmeta.c.meta_key.in_(list(_META)))
            .order_by(posts.c.ID, postmeta.c.meta_id)
        )
        rows: dict[int, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for post_id, title, status, key, value in conn.execute(query):
                entry = rows.setdefault(int(post_id), {"title": title or "", "status": status or ""})
                entry.setdefault(_META[key], value)  # first meta row wins, as get_post_meta does
        return [
            Product(
                product_id=post_id,
                title=entry["title"],
                status=entry["status"],
                level_id=_int(entry.get("level_id"), 0) or None,
                duration=_int(entry.get("duration"), 12),  # the add-on's default when unset
                units="days" if str(entry.get("units", "")).strip() == "days" else "months",
                unlimited=_truthy(entry.get("unlimited")),
                price=str(entry.get("price") or ""),
            )
            for post_id, entry in rows.items()
        ]

    def for_level(self, term_id: int) -> list[Product]:
        return [p for p in self.products() if p.level_id == term_id]

    def find(self, term_id: int, duration: int, units: str) -> Product | None:
        """The product granting exactly this term: an override, else a live one (published first, lowest id)."""
        for override in self.overrides:
            if (override.term_id, override.duration, override.units) == (term_id, duration, units):
                known = {p.product_id: p for p in self.products()}
                return known.get(override.product_id) or Product(override.product_id, "(configured)", "configured",
                                                                term_id, duration, units, False, "")
        candidates = [p for p in self.for_level(term_id)
                      if not p.unlimited and p.duration == duration and p.units == units and p.status != "trash"]
        if not candidates:
            return None
        return min(candidates, key=lambda p: (_STATUS_PREFERENCE.get(p.status, 3), p.product_id))
