"""The sleepers list's paging, quick filter and reminder-chain strings, and the trend chart's, merged into
:data:`sidecar.web.i18n.CATALOGS` (kept apart only for size)."""

from __future__ import annotations

EN: dict[str, str] = {
    "sleepers.prev_page": "« Previous page",
    "sleepers.page_of": "Page {page} of {pages}",
    "sleepers.page_size": "Rows per page:",
    "sleepers.within.label": "Expired in the last:",
    "sleepers.within.days": "{days} days",
    "sleepers.within.all": "any time",
    "sleepers.within.note": "Days since expiry ≤ {days}: first day without access on or after {since} (UTC days, counted back from {today}).",
    "sleepers.col.chain": "Reminders",
    "sleepers.chain.last": "Letter {step} sent {day}",
    "sleepers.chain.next": "Next: letter {step} on {day}",
    "sleepers.chain.stopped": "Stopped: {reason}",
    "sleepers.chain.none": "No letter",
    "sleepers.chain.monitoring_off": "reminders are off for the level",
    "sleepers.chain.not_approved": "the level's reminders await approval",
    "sleepers.chain.complete": "every letter was sent",
    "sleepers.chain.failed": "the last letter failed",
    "sleepers.chain.unknown": "the last letter's outcome is unknown",
    "sleepers.error.bad_within": "{field}: expected 7, 30 or 90 days, got {value}; the filter was ignored.",
    "sleepers.error.two_cursors": "{field}: a link names both the next and the previous page; the next page was shown.",
    "sleepers.trend.point": "{day}: {count}",
    "sleepers.trend.point_reconstructed": "{day}: {count} (reconstructed from key dates)",
}

RU: dict[str, str] = {
    "sleepers.prev_page": "« Предыдущая страница",
    "sleepers.page_of": "Страница {page} из {pages}",
    "sleepers.page_size": "Строк на странице:",
    "sleepers.within.label": "Доступ закончился за последние:",
    "sleepers.within.days": "{days} дн.",
    "sleepers.within.all": "за всё время",
    "sleepers.within.note": "Дней после окончания ≤ {days}: первый день без доступа {since} или позже (дни UTC, отсчёт от {today}).",
    "sleepers.col.chain": "Напоминания",
    "sleepers.chain.last": "Письмо {step} отправлено {day}",
    "sleepers.chain.next": "Далее: письмо {step}, {day}",
    "sleepers.chain.stopped": "Остановлено: {reason}",
    "sleepers.chain.none": "Писем нет",
    "sleepers.chain.monitoring_off": "напоминания по уровню выключены",
    "sleepers.chain.not_approved": "напоминания уровня ждут одобрения",
    "sleepers.chain.complete": "все письма отправлены",
    "sleepers.chain.failed": "последнее письмо не отправлено (ошибка)",
    "sleepers.chain.unknown": "судьба последнего письма неизвестна",
    "sleepers.error.bad_within": "{field}: ожидается 7, 30 или 90 дней, получено {value}; фильтр не применён.",
    "sleepers.error.two_cursors": "{field}: ссылка указывает и следующую, и предыдущую страницу; показана следующая.",
    "sleepers.trend.point": "{day}: {count}",
    "sleepers.trend.point_reconstructed": "{day}: {count} (восстановлено по датам ключей)",
}
