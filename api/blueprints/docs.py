"""The OpenAPI document and a self-contained page that renders it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from flask import Blueprint, Flask, Response, jsonify, render_template

from api.http import Runtime, runtime
from api.openapi import build_openapi

# The page is a Jinja2 template (autoescaped, as Flask does for .html) next to this module.
bp = Blueprint("docs", __name__, template_folder="templates")


def init(app: Flask, rt: Runtime) -> None:
    """Build the document once, when the app is created."""
    try:
        package_version = version("leadcast")
    except PackageNotFoundError:  # running from a checkout that was not installed
        package_version = "0.0.0"
    rt.openapi = build_openapi(max_batch=rt.settings.max_batch, version=package_version)


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3.1 document."""
    return jsonify(runtime().openapi)


@bp.get("/docs")
def docs() -> Response:
    """Return a page that renders the OpenAPI document with no external scripts or fonts."""
    doc = runtime().openapi
    return Response(render_template("docs.html", title=doc["info"]["title"], version=doc["info"]["version"]),
                    mimetype="text/html")
