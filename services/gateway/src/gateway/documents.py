"""The documents' pages, served from this gateway alone (no CDN: the hospitals' networks reach none, and a
strict CSP allows none):

- `/docs`: Swagger UI over `/openapi.json`, its script and style from the `fastapi-offline` package (PyPI),
  started by a script of ours (no inline script);
- `/asyncapi`: the AsyncAPI document rendered on the server as plain HTML (FastStream's page loads the AsyncAPI
  React component from a CDN), `/asyncapi.json` the document itself.

Every page carries the gateway's page headers (`gateway.hardening`) with a CSP that names exactly what it loads.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from faststream.specification.base import Specification

from gateway.asyncapi import asyncapi_json
from gateway.hardening import PAGE_SECURITY_HEADERS

DOCS: Final = "/docs"
DOCS_ASSETS: Final = DOCS + "/assets"
SWAGGER_INIT: Final = DOCS + "/swagger-init.js"
OPENAPI: Final = "/openapi.json"
ASYNCAPI: Final = "/asyncapi"
SWAGGER_ASSETS_DIR: Final = Path(str(files("fastapi_offline") / "static"))

# Swagger UI (measured in Chromium, see the browser test): its own script and style files, its icons as data:
# SVGs, requests to this origin only (the document, "Try it out").
SWAGGER_CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The AsyncAPI page: no script at all, one stylesheet of its own (inline, allowed by its hash).
_ASYNCAPI_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;line-height:1.5}"
    "pre{background:#f4f4f4;padding:.75rem;overflow:auto;font-size:.85rem}"
    "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;"
    "vertical-align:top}code{font-size:.9em}"
)
SWAGGER_INIT_SCRIPT: Final = f"""window.addEventListener('load', function () {{
  window.ui = SwaggerUIBundle({{
    url: '{OPENAPI}',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: 'BaseLayout'
  }});
}});
"""


def _style_hash(style: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode("ascii") + "'"


ASYNCAPI_CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; style-src {_style_hash(_ASYNCAPI_STYLE)}; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def _page_headers(policy: str) -> dict[str, str]:
    return {**PAGE_SECURITY_HEADERS, "Content-Security-Policy": policy, "Cache-Control": "no-cache"}


def swagger_page(title: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} — API</title>
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">
<link rel="icon" href="{DOCS_ASSETS}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script src="{SWAGGER_INIT}"></script>
</body>
</html>
"""


def _text(markdown: str) -> str:
    """A description's text as HTML: escaped, its `code` spans shown as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(markdown))


def _schema_name(reference: str) -> str:
    return reference.rsplit("/", 1)[-1]


def _payload_reference(document: dict[str, Any], message: dict[str, Any]) -> str | None:
    """The components/schemas name of a channel message's payload (messages are `$ref`s to components)."""
    reference = message.get("$ref", "")
    resolved = document.get("components", {}).get("messages", {}).get(_schema_name(reference), message)
    payload = resolved.get("payload", {})
    return _schema_name(payload["$ref"]) if "$ref" in payload else None


def _actions(document: dict[str, Any]) -> dict[str, str]:
    """channel key -> "receive" (the gateway consumes it) or "send" (it publishes it)."""
    return {
        _schema_name(operation["channel"]["$ref"]): operation["action"]
        for operation in document.get("operations", {}).values()
    }


def asyncapi_page(document: dict[str, Any]) -> str:
    """The AsyncAPI document as one HTML page: every channel (topic), what the gateway does with it and its
    payload's schema; no script."""
    info = document.get("info", {})
    actions = _actions(document)
    rows: list[str] = []
    for key, channel in sorted(document.get("channels", {}).items(), key=lambda item: item[1]["address"]):
        action = {"receive": "consumed", "send": "published"}.get(actions.get(key, ""), "")
        payloads = [
            name
            for message in channel.get("messages", {}).values()
            if (name := _payload_reference(document, message)) is not None
        ]
        links = ", ".join(f'<a href="#schema-{html.escape(name)}">{html.escape(name)}</a>' for name in payloads)
        rows.append(
            f"<tr><td><code>{html.escape(channel['address'])}</code></td><td>{action}</td>"
            f"<td>{_text(channel.get('description', ''))}</td><td>{links}</td></tr>"
        )
    schemas = "".join(
        f'<h3 id="schema-{html.escape(name)}">{html.escape(name)}</h3>'
        f"<pre>{html.escape(json.dumps(schema, indent=2, ensure_ascii=False))}</pre>"
        for name, schema in sorted(document.get("components", {}).get("schemas", {}).items())
    )
    title = html.escape(str(info.get("title", "AsyncAPI")))
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title} — AsyncAPI</title><style>{_ASYNCAPI_STYLE}</style></head>
<body>
<h1>{title}</h1>
<p>{html.escape(str(info.get("description", "")))} AsyncAPI {html.escape(str(document.get("asyncapi", "")))},
version {html.escape(str(info.get("version", "")))}. The document: <a href="{ASYNCAPI}.json">{ASYNCAPI}.json</a>.</p>
<h2>Topics</h2>
<table><thead><tr><th>Topic</th><th>By the gateway</th><th>Description</th><th>Payload</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<h2>Schemas</h2>
{schemas}
</body>
</html>
"""


def mount(app: FastAPI, spec: Specification) -> None:
    """Adds `/docs` (with its assets), `/asyncapi` and `/asyncapi.json` to the app (built with `docs_url=None`)."""
    document = asyncapi_json(spec)
    asyncapi_html = asyncapi_page(document)
    docs_html = swagger_page(app.title)

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_html, headers=_page_headers(SWAGGER_CONTENT_SECURITY_POLICY))

    @app.get(SWAGGER_INIT, include_in_schema=False)
    async def swagger_init() -> Response:
        return Response(SWAGGER_INIT_SCRIPT, media_type="text/javascript; charset=utf-8")

    @app.get(ASYNCAPI + ".json", include_in_schema=False)
    async def asyncapi_document() -> JSONResponse:
        return JSONResponse(document)

    @app.get(ASYNCAPI, include_in_schema=False)
    async def asyncapi() -> HTMLResponse:
        return HTMLResponse(asyncapi_html, headers=_page_headers(ASYNCAPI_CONTENT_SECURITY_POLICY))

    app.mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER_ASSETS_DIR), name="docs-assets")
