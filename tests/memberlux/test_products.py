"""A WooCommerce product of a level as messages and the grant's audit trail name it."""

from __future__ import annotations

import pytest

from sidecar.memberlux.products import Product


def _product(duration: int, units: str, *, unlimited: bool = False) -> Product:
    return Product(product_id=4, title="Английский — 1 мес.", status="publish", level_id=7, duration=duration,
                   units=units, unlimited=unlimited, price="990")


@pytest.mark.parametrize(("duration", "units", "term"), [
    (1, "months", "1 month"), (3, "months", "3 months"), (1, "days", "1 day"), (1, "years", "1 year"), (21, "days", "21 days")])
def test_a_product_names_its_term_in_the_right_number(duration, units, term):
    assert _product(duration, units).describe() == f"#4 'Английский — 1 мес.' ({term}, publish)"


def test_an_unlimited_product_says_so():
    assert _product(0, "days", unlimited=True).describe() == "#4 'Английский — 1 мес.' (unlimited, publish)"
