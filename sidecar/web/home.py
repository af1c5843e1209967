"""The status page: what the sidecar sees of the site and of itself (the dashboard is the first page)."""

from __future__ import annotations

from flask import Blueprint, render_template

from sidecar import status
from sidecar.web import current_runtime
from sidecar.web.auth import login_required

blueprint = Blueprint("home", __name__)


@blueprint.get("/status")
@login_required  # the page reveals versions, prefixes and store state
def status_page():
    return render_template("status.html", status=status.collect(current_runtime()))
