"""The reminders' "Letter settings" tab: every level's letters at a glance, each linked to the level's
settings page (``/monitor/levels/<id>/settings``, where they are edited) and to its letter preview.

The schedule shown is the one the planner uses (:func:`sidecar.reminders.planner.schedule_of`), so a
letter reads as "off" here exactly when a run would not send it.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, render_template

from sidecar.domain.reminders import Schedule
from sidecar.memberlux.reader import Level
from sidecar.monitor.display import level_tree
from sidecar.monitor.settings import MonitorSettings
from sidecar.reminders.planner import schedule_of
from sidecar.web import current_runtime
from sidecar.web.auth import login_required

blueprint = Blueprint("reminder_settings", __name__)


@dataclass(frozen=True)
class LevelLetters:
    level: Level
    depth: int
    enabled: bool
    schedule: Schedule


@blueprint.get("/reminders/settings")
@login_required
def levels_page():
    runtime = current_runtime()
    settings = MonitorSettings(runtime).all_levels()
    rows = [LevelLetters(level, depth, settings[level.term_id].enabled, schedule_of(settings[level.term_id]))
            for level, depth in level_tree(runtime.reader.levels()) if level.term_id in settings]
    return render_template("reminders_settings.html", rows=rows, tab="settings", problems=[])
