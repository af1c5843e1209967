"""The landing page: what the sidecar sees of the site and of itself."""

from __future__ import annotations

from flask import Blueprint, render_template

from sidecar import status
from sidecar.web import current_runtime
from sidecar.web.auth import login_required

blueprint = Blueprint("home", __name__)


@blueprint.get("/")
@login_required  # the page reveals versions, prefixes and store state
def index():
    return render_template("status.html", status=status.collect(current_runtime()))
