"""The landing page: what the sidecar sees of the site and of itself."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from sidecar import status

blueprint = Blueprint("home", __name__)


@blueprint.get("/")
def index():
    return render_template("status.html", status=status.collect(current_app.extensions["mlsidecar"]))
