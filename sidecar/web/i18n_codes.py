"""Wordings of message codes that no older catalog had (see :mod:`sidecar.web.messages`), merged into
:data:`sidecar.web.i18n.CATALOGS`. Jinja's own words are quoted as it wrote them."""

from __future__ import annotations

EN: dict[str, str] = {
    "templates.error.syntax": "syntax error (Jinja says: {detail})",
    "templates.error.range_too_long": "the template does too much work (a range gives at most {max} numbers)",
    "templates.error.undefined": "the template uses a value that is not defined (Jinja says: {detail})",
    "templates.error.undefined_value": "the value is not defined",
    "templates.error.failed": "the template cannot be rendered ({detail})",
}

RU: dict[str, str] = {
    "templates.error.syntax": "синтаксическая ошибка (сообщение Jinja: {detail})",
    "templates.error.range_too_long": "шаблон выполняет слишком много работы (range даёт не больше {max} чисел)",
    "templates.error.undefined": "шаблон использует неопределённое значение (сообщение Jinja: {detail})",
    "templates.error.undefined_value": "значение не определено",
    "templates.error.failed": "шаблон не удаётся отрисовать ({detail})",
}
