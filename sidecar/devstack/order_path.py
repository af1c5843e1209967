"""``POST /mbl/v1/order`` as a sequence of named steps, each a run of autocommitted statements.

The real (WooCommerce) dialect, in the order a real site writes (``memberlux/core.md`` 13, 7, 8):

==============  ====================================================================================
``user``        find the user by e-mail or create one (users row, then usermeta rows); non-empty
                name and usermeta fields
``order``       the ``shop_order`` post as ``wc-pending``, its meta and line items, then a separate
                update to ``wc-completed`` with the completion meta
``key``         payments add-on (only while ``mbl-payments`` is an active plugin): a ``new`` key per
                ``mbl_key`` line, activated by a separate UPDATE when ``mblp.auto_activation`` is on
``autoresponder``  auto-responder listener: the first ``keys_meta`` row (site-local time, no source,
                no UTM) and a subscription when the level's mailing list is on
``mails``       WooCommerce's new-order (admin) and completed-order (customer) mails, the add-on's
                customer and admin letters
``webhooks``    the mbl-api fan-out, blocking, ``type`` = the activation source (``''`` here)
``keys_meta``   core's upsert: UTC time, source, UTM values of the request
``certificate`` the auto certificate and its e-mail for levels issuing ``auto``
``processed``   usermeta ``mblp_order_processed_{order}``
==============  ====================================================================================

The owner's term-id dialect has no WooCommerce order and runs ``user``, ``key``, ``autoresponder``,
``webhooks``, ``keys_meta``, ``certificate``.

The activation page (a learner enters a code generated in advance, core.md 3.1, 3.2) shares the
activation and its listeners: :meth:`OrderPath.activate_code` updates the code's row **in place** and
runs ``autoresponder``, ``webhooks``, ``keys_meta``, ``certificate`` with the source ``activation_page``.

Each step of an order runs for all its keys before the next step begins. Between two steps the
fault plan may delay, pause, kill or halt the order (``faults.OrderGates``); earlier steps' rows stay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sidecar.devstack.faults import Fatal, RunInfo
from sidecar.devstack.phpdate import StackRow, key_dates
from sidecar.devstack.site_model import USERMETA_FIELDS, UTM_FIELDS, MemberLuxSite, Product
from sidecar.devstack.wordpress import Answer, absint, php_empty, wp_error_body

__all__ = ["ProductOrder", "TermOrder", "OrderPath"]


@dataclass
class ProductOrder:
    """The real dialect's parameters, validated and sanitised (core.md 5.2)."""

    email: str
    product_ids: list[int]
    fields: dict[str, str]


@dataclass
class TermOrder:
    """The owner's term-id dialect: one level, term and customer."""

    email: str
    term_id: int
    duration: int
    units: str
    unlimited: bool
    fields: dict[str, str]
    meta: dict[str, Any]


@dataclass
class _Key:
    key_id: int
    code: str
    term_id: int
    duration: int
    units: str
    unlimited: bool
    title: str = ""
    date_start: date | None = None
    date_end: date | None = None


@dataclass
class OrderPath:
    """One order request from its first step to its last, on the PHP worker's thread."""

    site: MemberLuxSite
    info: RunInfo
    order: ProductOrder | TermOrder
    api_user_id: int
    query: dict[str, Any]
    form: dict[str, Any]
    cookies: dict[str, str]
    host_url: str
    failure: str | None = None
    # -- state carried from step to step --
    products: list[Product] = field(default_factory=list)
    customer: Any = None
    order_id: int | None = None
    keys: list[_Key] = field(default_factory=list)
    activated: list[_Key] = field(default_factory=list)
    _cache: list[StackRow] | None = None
    _utm_cookies_used: bool = False

    # -- driving ------------------------------------------------------------------------------------------

    def run(self) -> Answer:
        """Raises :class:`Fatal` (answer 500) or ``Halted`` (the worker died) between steps."""
        site = self.site
        site.gates.delay(self.info, site.order_latency())
        if self.failure == "before":
            raise Fatal("forced failure before any write")
        answer = self._run_product() if isinstance(self.order, ProductOrder) else self._run_term()
        if answer.status == 200:
            site.count_order()
            if self.failure == "after":
                raise Fatal("forced failure after every write")
        return answer

    def _step(self, name: str) -> None:
        self.site.gates.boundary(self.info, name)
        if self.failure == f"at:{name}":
            raise Fatal(f"forced failure before step {name}")

    @property
    def owner_id(self) -> int:
        # An old payments add-on activates for the current (API) user when the customer could not be made.
        return int(self.customer.ID) if self.customer is not None else self.api_user_id

    # -- the real dialect ---------------------------------------------------------------------------------

    def _run_product(self) -> Answer:
        site, order = self.site, self.order
        assert isinstance(order, ProductOrder)
        for product_id in order.product_ids:
            product = site.product(product_id)
            if product is None:
                # wc_get_product failed: refused before anything is written (core.md 5.3).
                return Answer(404, json={"error": f"Product product_id: {product_id} not found"})
            self.products.append(product)
        self._step("user")
        self.customer = site.find_user_by_email(order.email) or site.create_user(order.email, site.now())
        if self.customer is not None:
            self._write_fields(int(self.customer.ID), order.fields)
        self._step("order")
        self._create_wc_order()
        self.info.order_id = self.order_id
        addon = site.payments_addon_active()
        key_lines = [p for p in self.products if p.product_type == "mbl_key"]
        if addon:
            self._step("key")
            auto = site.auto_activation_on()
            for product in key_lines:
                key = self._new_key_from_product(product)
                if auto:
                    self._activate(key)
        self._autoresponder()
        self._step("mails")
        self._order_mails(addon and bool(key_lines))
        self._activation_listeners(source=self._form_source())
        if addon and self.customer is not None:
            self._step("processed")
            site.set_user_meta(int(self.customer.ID), f"mblp_order_processed_{self.order_id}", "1")
        return Answer(200, json={"order": self.order_id})

    def _form_source(self) -> str:
        # The add-on passes no source; core then takes a POSTed form field "source" (core.md 5.4, 13).
        value = self.form.get("source", "")
        return value if isinstance(value, str) else ""

    def _write_fields(self, user_id: int, fields: dict[str, str]) -> None:
        # Only non-empty values are written (PHP empty(): "" and "0" are empty); nothing is cleared (5.2).
        for name, value in fields.items():
            if php_empty(value):
                continue
            self.site.set_user_meta(user_id, "surname" if name == "patronymic" else name, value)

    def _create_wc_order(self) -> None:
        site, order = self.site, self.order
        assert isinstance(order, ProductOrder)
        now = site.now()
        order_id = self.order_id = site.insert_order_post(author=self.api_user_id, now=now, host_url=self.host_url)
        meta = site.user_meta(int(self.customer.ID)) if self.customer is not None else {}
        order_key = "wc_order_" + "".join(site.code_rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
                                          for _ in range(13))
        for key, value in (
            ("_order_key", order_key),
            ("_customer_user", str(int(self.customer.ID)) if self.customer is not None else "0"),
            ("_billing_email", order.email),
            ("_billing_first_name", meta.get("first_name", "")),
            ("_billing_last_name", meta.get("last_name", "")),
            ("_order_currency", site.option("woocommerce_currency") or "RUB"),
            ("_prices_include_tax", "no"),
            ("_created_via", "rest-api"),
        ):
            site.add_post_meta(order_id, key, value)
        for product in self.products:
            site.add_line_item(order_id, product)
        site.set_post_meta(order_id, "_order_total", f"{sum(p.price for p in self.products):.2f}")
        site.complete_order(order_id, site.now())

    def _new_key_from_product(self, product: Product) -> _Key:
        meta = product.meta
        term_id = absint(meta.get("_mbl_key_pin_code_level_id") or 0)
        raw_duration = meta.get("_mbl_key_pin_code_duration")
        duration = absint(raw_duration) if raw_duration not in (None, "") else 12  # add-on default: 12
        # MemberLux coerces any unit but "days" to "months" on write (core.md 1.3).
        units = "days" if meta.get("_mbl_key_pin_code_units") == "days" else "months"
        unlimited = str(meta.get("_mbl_key_pin_code_is_unlimited", "")).lower() in ("on", "1", "yes")
        key_id, code = self.site.insert_new_key(term_id, duration, units, unlimited, self.site.now())
        key = _Key(key_id, code, term_id, duration, units, unlimited, title=product.title)
        self.keys.append(key)
        return key

    def _order_mails(self, addon_letters: bool) -> None:
        site, order = self.site, self.order
        assert isinstance(order, ProductOrder)
        blogname = site.option("blogname") or "WordPress"
        admin = site.option("admin_email") or "admin@localhost"
        titles = ", ".join(f"«{p.title}»" for p in self.products)
        total = f"{sum(p.price for p in self.products):.2f}"
        site.send_mail(kind="wc_new_order", to=admin, order_id=self.order_id,
                       subject=f"[{blogname}]: Новый заказ #{self.order_id}",
                       text=f"Вы получили заказ №{self.order_id} от {order.email}: {titles}. Итого: {total}.")
        site.send_mail(kind="wc_customer_completed_order", to=order.email, order_id=self.order_id,
                       subject=f"Ваш заказ на сайте {blogname} выполнен",
                       text=f"Здравствуйте! Мы выполнили ваш заказ №{self.order_id}: {titles}.")
        if not addon_letters:
            return
        key_titles = ", ".join(f"«{key.title}»" for key in self.keys)
        text = f"Здравствуйте! Оплата товара {key_titles} прошла успешно! Спасибо!"
        unused = [key for key in self.keys if key not in self.activated]
        if unused:
            text += "\nВаш код доступа: " + ", ".join(key.code for key in unused)
        site.send_mail(kind="mblp_customer", to=order.email, order_id=self.order_id,
                       subject=f"{blogname}: оплата прошла успешно", text=text)
        site.send_mail(kind="mblp_admin", to=admin, order_id=self.order_id,
                       subject=f"{blogname}: новая оплата",
                       text=f"Пользователь {order.email} оплатил товар {key_titles} (заказ №{self.order_id}).")

    # -- the owner's term-id dialect ---------------------------------------------------------------------

    def _run_term(self) -> Answer:
        site, order = self.site, self.order
        assert isinstance(order, TermOrder)
        if site.level(order.term_id) is None:
            return Answer(404, json=wp_error_body("rest_term_invalid", f"Level term_id: {order.term_id} not found", 404))
        self._step("user")
        self.customer = site.find_user_by_email(order.email) or site.create_user(order.email, site.now())
        if self.customer is None:
            return Answer(400, json=wp_error_body("registration_failed", "Could not create a user for this e-mail.", 400))
        self._write_fields(int(self.customer.ID), order.fields)
        self._step("key")
        key_id, code = site.insert_new_key(order.term_id, order.duration, order.units, order.unlimited, site.now())
        key = _Key(key_id, code, order.term_id, order.duration, order.units, order.unlimited)
        self.keys.append(key)
        self._activate(key)
        self._autoresponder()
        # The owner's dialect activates directly, with the source named in its specification.
        self._activation_listeners(source="api_order")
        return Answer(200, json={"ok": True, "user_id": int(self.customer.ID), "term_id": order.term_id,
                                 "key_id": key_id, "date_end": None if order.unlimited else key.date_end.isoformat()})

    # -- the activation page -------------------------------------------------------------------------------

    def activate_code(self, row: Any, learner: Any) -> _Key:
        """The learner ``learner`` enters the code of ``row`` (an unused, pre-created key) on the activation
        page: the normal activation path on that very row (its id stays), then its listeners."""
        self.customer = learner
        key = _Key(int(row.id), str(row.key), int(row.term_id), int(row.duration or 0),
                   "days" if row.units == "days" else "months", bool(row.is_unlimited))
        self.keys.append(key)
        self._step("key")
        self._activate(key)
        self._autoresponder()
        self._activation_listeners(source="activation_page")
        return key

    # -- activation and its listeners (core.md 3.2, 7, 8) ----------------------------------------------

    def _activate(self, key: _Key) -> None:
        site = self.site
        today = site.now().date()
        # User keys are cached once per request and not refreshed after an activation (core.md 3.2).
        if self._cache is None:
            self._cache = site.stack_rows(self.owner_id)
        dates = key_dates(self._cache, key.term_id, today, key.duration, key.units)
        key.date_start, key.date_end = dates.date_start, dates.date_end
        site.activate_key(key.key_id, self.owner_id, today=today, date_start=dates.date_start, date_end=dates.date_end)
        site.reset_expired_keys(self.owner_id)
        self.activated.append(key)

    def _autoresponder(self) -> None:
        """The auto-responder's listener on the saved key row (it runs before anything else)."""
        site = self.site
        if not self.activated or not site.has_auto_responder:
            return
        self._step("autoresponder")
        for key in self.activated:
            if site.keys_meta_exists(key.key_id):
                continue  # already activated once: nothing else happens (core.md 8)
            local_now = site.local(site.now()).strftime("%Y-%m-%d %H:%M:%S")
            site.insert_keys_meta(key.key_id, {"activation_datetime": local_now})
            mailing = site.mailing_list(key.term_id)
            if mailing is None or int(mailing.is_on or 0) != 1:
                continue
            if site.subscription_exists(self.owner_id, key.term_id, mailing.datetime):
                continue
            if int(mailing.unsubscribe or 0) == 1:
                site.disable_running_subscriptions(self.owner_id)
            site.insert_subscription(self.owner_id, key.term_id, mailing.datetime,
                                     site.local(site.now()).strftime("%Y-%m-%d %H:%M:%S"))

    def _activation_listeners(self, *, source: str) -> None:
        """Listeners on ``wpm_update_user_key_dates``: webhooks, then core's ``keys_meta``, then certificates."""
        if not self.activated:
            return
        self._step("webhooks")
        for key in self.activated:
            self.site.deliver_webhooks(self._payload(key, source), self.site.home_url(self.host_url))
        self._step("keys_meta")
        for key in self.activated:
            self._write_keys_meta(key, source)
        if self.site.has_certificates:
            self._step("certificate")
            for key in self.activated:
                self._auto_certificate(key)

    def _payload(self, key: _Key, source: str) -> dict[str, Any]:
        """The mbl-api webhook body (core.md 6.4)."""
        site = self.site
        user = site.user(self.owner_id)
        meta = site.user_meta(self.owner_id)
        level = site.level(key.term_id)
        return {
            "type": source,
            "email": user.user_email if user is not None else "",
            "first_name": meta.get("first_name", ""),
            "last_name": meta.get("last_name", ""),
            "patronymic": meta.get("surname", ""),
            **{name: meta.get(name, "") for name in USERMETA_FIELDS},
            "key": {
                "term_id": str(key.term_id),
                "name": level.name if level is not None else "",
                "is_unlimited": 1 if key.unlimited else 0,
                "duration": None if key.unlimited else str(key.duration),
                "units": None if key.unlimited else key.units,
                "date_start": key.date_start.strftime("%d-%m-%Y") if key.date_start else None,
                "date_end": None if key.unlimited or key.date_end is None else key.date_end.strftime("%d-%m-%Y"),
            },
        }

    def _utm(self) -> dict[str, str] | None:
        """``wpm_get_utm()``: query values, else the ``wpm_utm_*`` cookies, else ``''`` - or ``None``.

        Core takes UTM values only when the request has a non-empty ``utm_*`` parameter or a
        ``wpm_has_utm`` cookie; after the first key it forgets the cookies for this request.
        """
        has_query = any(isinstance(self.query.get(n), str) and self.query[n].strip() for n in UTM_FIELDS)
        cookies = {} if self._utm_cookies_used else self.cookies
        if not has_query and not cookies.get("wpm_has_utm"):
            return None
        values = {}
        for name in UTM_FIELDS:
            value = self.query.get(name)
            if value is None:
                value = cookies.get(f"wpm_{name}", "")
            values[name] = str(value)[:60]  # VARCHAR(60); MySQL's non-strict mode cuts the rest
        self._utm_cookies_used = True
        return values

    def _write_keys_meta(self, key: _Key, source: str) -> None:
        site = self.site
        values: dict[str, Any] = {"activation_datetime": site.now().strftime("%Y-%m-%d %H:%M:%S"),
                                  "source": source[:100]}
        utm = self._utm()
        if utm is not None:
            values.update(utm)
        if site.keys_meta_exists(key.key_id):
            site.update_keys_meta(key.key_id, values)
        else:
            site.insert_keys_meta(key.key_id, values)

    def _auto_certificate(self, key: _Key) -> None:
        site = self.site
        level_meta = site.term_meta(key.term_id)
        if level_meta.get("_mblc_how_to_issue") != "auto":
            return
        today = site.now().date()
        certificate_id = site.insert_certificate(self.owner_id, key.term_id, level_meta, date_issue=today,
                                                 create_date=today, responsible=self.api_user_id)
        user = site.user(self.owner_id)
        if user is None:
            return
        options = site.option_php("mblc_options")
        options = options if isinstance(options, dict) else {}
        link = f"{site.home_url(self.host_url)}/mbl-certificates/view/pdf/{certificate_id}"
        text = str(options.get("email_message") or "[certificate_link]").replace("[certificate_link]", link)
        site.send_mail(kind="mblc_certificate", to=user.user_email, order_id=self.order_id,
                       subject=str(options.get("email_subject") or "Сертификат"), text=text)

