"""``/favicon.ico``: browsers ask for it on every site whatever the page links; the answer is the app's icon
(an SVG, which they accept at that address too) rather than a 404 in every log."""

from __future__ import annotations

from flask import Blueprint, current_app, send_from_directory

blueprint = Blueprint("favicon", __name__)

ICON = "favicon.svg"


@blueprint.get("/favicon.ico")
def favicon():
    return send_from_directory(current_app.static_folder or "static", ICON, mimetype="image/svg+xml",
                               max_age=24 * 3600)
