"""Russian and English for every string the web UI shows.

Catalogs are plain dictionaries: a test checks both languages define exactly the same keys, so a
missing translation fails CI instead of showing a raw key to an administrator.
"""

from __future__ import annotations

from flask import Flask, g, request

LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "en"
COOKIE = "mls_lang"

CATALOGS: dict[str, dict[str, str]] = {
    "en": {
        "app.title": "MemberLux sidecar",
        "nav.status": "Status",
        "lang.switch": "Language",
        "status.heading": "System status",
        "status.site": "WordPress site",
        "status.memberlux_version": "MemberLux version",
        "status.timezone": "Site time zone",
        "status.levels": "Access levels",
        "status.modules": "MemberLux modules",
        "status.module.certificates": "Certificates",
        "status.module.webhooks": "API & webhooks",
        "status.module.auto_responder": "Auto-responder",
        "status.module.woocommerce": "WooCommerce",
        "status.on": "found",
        "status.off": "not found",
        "status.notices": "Notices",
        "status.store": "Our store",
        "status.store_revision": "Schema revision",
        "status.store_current": "up to date",
        "status.store_outdated": "outdated: run `mlsidecar db upgrade`",
        "status.worker": "Background worker",
        "status.worker_seen": "last heartbeat",
        "status.worker_never": "no heartbeat yet: is `mlsidecar worker` running?",
        "status.today_utc": "Today (UTC, MemberLux key dates)",
        "status.today_site": "Today (site time zone)",
        "status.unknown": "unknown",
        "auth.title": "Sign in",
        "auth.heading": "Sign in to the sidecar",
        "auth.intro": "Use the login (or e-mail) and password of a WordPress administrator of this site.",
        "auth.login": "Login or e-mail",
        "auth.password": "Password",
        "auth.submit": "Sign in",
        "auth.logout": "Sign out",
        "auth.signed_in_as": "Signed in as {name}",
        "auth.missing": "Enter your login and password.",
        "auth.invalid": "Sign-in failed: wrong login or password, or this account may not use the sidecar.",
        "auth.too_many": "Too many failed attempts. Try again in {minutes} min.",
        "auth.csrf_failed": "The form has expired or did not come from this site. Reload the page and try again.",
    },
    "ru": {
        "app.title": "Сервис-компаньон MemberLux",
        "nav.status": "Состояние",
        "lang.switch": "Язык",
        "status.heading": "Состояние системы",
        "status.site": "Сайт WordPress",
        "status.memberlux_version": "Версия MemberLux",
        "status.timezone": "Часовой пояс сайта",
        "status.levels": "Уровни доступа",
        "status.modules": "Модули MemberLux",
        "status.module.certificates": "Сертификаты",
        "status.module.webhooks": "API и вебхуки",
        "status.module.auto_responder": "Автоответчик",
        "status.module.woocommerce": "WooCommerce",
        "status.on": "найден",
        "status.off": "не найден",
        "status.notices": "Замечания",
        "status.store": "Наше хранилище",
        "status.store_revision": "Версия схемы",
        "status.store_current": "актуальна",
        "status.store_outdated": "устарела: выполните `mlsidecar db upgrade`",
        "status.worker": "Фоновый обработчик",
        "status.worker_seen": "последний сигнал",
        "status.worker_never": "сигналов ещё не было: запущен ли `mlsidecar worker`?",
        "status.today_utc": "Сегодня (UTC, даты ключей MemberLux)",
        "status.today_site": "Сегодня (часовой пояс сайта)",
        "status.unknown": "неизвестно",
        "auth.title": "Вход",
        "auth.heading": "Вход в сервис-компаньон",
        "auth.intro": "Введите логин (или e-mail) и пароль администратора WordPress этого сайта.",
        "auth.login": "Логин или e-mail",
        "auth.password": "Пароль",
        "auth.submit": "Войти",
        "auth.logout": "Выйти",
        "auth.signed_in_as": "Вы вошли как {name}",
        "auth.missing": "Введите логин и пароль.",
        "auth.invalid": "Не удалось войти: неверный логин или пароль, либо этой учётной записи вход в сервис не разрешён.",
        "auth.too_many": "Слишком много неудачных попыток. Повторите через {minutes} мин.",
        "auth.csrf_failed": "Форма устарела или отправлена не с этого сайта. Обновите страницу и повторите.",
    },
}


def translate(key: str, language: str | None = None, **values: object) -> str:
    catalog = CATALOGS.get(language or current_language(), CATALOGS[DEFAULT_LANGUAGE])
    text = catalog.get(key) or CATALOGS[DEFAULT_LANGUAGE].get(key) or key
    return text.format(**values) if values else text


def negotiate(accept_language: str | None, explicit: str | None) -> str:
    if explicit in LANGUAGES:
        return explicit  # type: ignore[return-value]
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.split("-")[0].lower()
        if primary in LANGUAGES and q > best_q:
            best, best_q = primary, q
    return best


def current_language() -> str:
    try:
        return g.language
    except (AttributeError, RuntimeError):
        return DEFAULT_LANGUAGE


def init_app(app: Flask) -> None:
    @app.before_request
    def _pick_language() -> None:
        g.language = negotiate(request.headers.get("Accept-Language"),
                               request.args.get("lang") or request.cookies.get(COOKIE))

    @app.after_request
    def _remember_language(response):  # noqa: ANN001
        chosen = request.args.get("lang")
        if chosen in LANGUAGES:
            response.set_cookie(COOKIE, chosen, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
        response.headers["Content-Language"] = g.get("language", DEFAULT_LANGUAGE)
        return response

    @app.context_processor
    def _inject():  # noqa: ANN202
        return {"_": translate, "language": current_language(), "languages": LANGUAGES}
