"""The OpenAPI document and a self-contained page that renders it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from flask import Blueprint, Flask, Response, jsonify

from api.http import Runtime, runtime
from api.openapi import build_openapi

bp = Blueprint("docs", __name__)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>leadcast API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#1b1f24}
h1{margin-bottom:0}.op{border:1px solid #d0d7de;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}
.m{font-weight:700;text-transform:uppercase;margin-right:.6rem}.get{color:#0969da}.post{color:#1a7f37}
code,pre{font:13px ui-monospace,monospace;background:#f6f8fa}pre{padding:.6rem;overflow:auto}
details summary{cursor:pointer}
</style></head><body>
<h1>leadcast API</h1><p id="desc"></p><div id="ops">Loading /openapi.json&hellip;</div>
<script>
fetch("openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("desc").textContent = doc.info.description + " (version " + doc.info.version + ")";
  const ops = document.getElementById("ops"); ops.textContent = "";
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const div = document.createElement("div"); div.className = "op";
      const head = document.createElement("div");
      const m = document.createElement("span"); m.className = "m " + method; m.textContent = method;
      const p = document.createElement("code"); p.textContent = path;
      head.append(m, p, document.createTextNode(" \u2014 " + (op.summary || "")));
      div.append(head);
      if (op.description) { const d = document.createElement("p"); d.textContent = op.description; div.append(d); }
      const det = document.createElement("details"); const s = document.createElement("summary");
      s.textContent = "request and responses"; const pre = document.createElement("pre");
      pre.textContent = JSON.stringify({security: op.security, parameters: op.parameters,
        requestBody: op.requestBody, responses: op.responses}, null, 2);
      det.append(s, pre); div.append(det); ops.append(div);
    }
  }
  const det = document.createElement("details"); const s = document.createElement("summary");
  s.textContent = "schemas"; const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(doc.components.schemas, null, 2); det.append(s, pre); ops.append(det);
});
</script></body></html>
"""


def init(app: Flask, rt: Runtime) -> None:
    """Build the document once, when the app is created."""
    try:
        package_version = version("leadcast")
    except PackageNotFoundError:  # running from a checkout that was not installed
        package_version = "0.0.0"
    rt.services["openapi"] = build_openapi(max_batch=rt.settings.max_batch, version=package_version)


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3.1 document."""
    return jsonify(runtime().services["openapi"])


@bp.get("/docs")
def docs() -> Response:
    """Return a page that renders the OpenAPI document with no external scripts or fonts."""
    return Response(PAGE, mimetype="text/html")
