"""The interactive API documentation (``/docs``) under the service's own security headers.

FastAPI's default ``/docs`` page loads Swagger UI from a CDN and starts it with an inline
script. Under the service's Content-Security-Policy (``default-src 'self'``, no inline
scripts) a browser refuses both and the page stays blank. Here:

- Swagger UI's files are served by the service itself from the ``swagger-ui-py`` package
  on PyPI (``/docs-assets/...``): nothing is loaded from another origin.
- The page keeps FastAPI's small inline start-up script, and the page's CSP allows exactly
  that script by its SHA-256 hash (CSP Level 2 ``'sha256-...'`` source). Any other inline
  script, injected or not, stays blocked.

Every other response keeps the default policy of ``SecurityHeadersMiddleware``; the docs page
sets its own, which that middleware leaves in place.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from bitsec.fastapi import public

ASSETS = "/docs-assets"


def swagger_ui_assets() -> Path:
    """Swagger UI's distribution files, as shipped in the ``swagger-ui-py`` package (Swagger
    UI 5, which renders OpenAPI 3.1 as FastAPI writes it; Apache-2.0). Only the files are
    used: the package itself is not imported."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: pip install swagger-ui-py")
    return Path(next(iter(spec.submodule_search_locations))) / "static"

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def script_hashes(html: bytes) -> list[str]:
    """The CSP hash sources of every inline ``<script>`` of ``html`` (exact bytes hashed)."""
    return ["'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
            for m in _INLINE_SCRIPT.finditer(html)]


def docs_csp(html: bytes) -> str:
    """The docs page's policy: the service's default, plus its own inline start-up script by
    hash, and ``data:`` images (Swagger UI draws some icons as data URLs)."""
    return ("default-src 'self'; script-src 'self' " + " ".join(script_hashes(html)) + "; "
            "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
            "form-action 'self'")


def install_docs(app: FastAPI, *, path: str = "/docs") -> None:
    """Serve Swagger UI at ``path`` from local assets under a hash-based CSP. Create the app
    with ``docs_url=None`` (FastAPI's default page would load its assets from a CDN)."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_assets())), name="docs-assets")
    page: dict[str, Any] = {}

    @app.get(path, include_in_schema=False)
    @public
    def docs() -> HTMLResponse:
        if "body" not in page:  # rendered once: the hash must match the bytes sent
            html = get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{app.title} - API documentation",
                swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
                oauth2_redirect_url=None,
            )
            page["body"] = bytes(html.body)
            page["csp"] = docs_csp(page["body"])
        return HTMLResponse(page["body"], headers={"Content-Security-Policy": page["csp"]})
