"""`/api/v1/docs`: Swagger UI over our OpenAPI description, served from a Python package, never a CDN.

The assets come from `swagger_ui_bundle` (PyPI `swagger-ui-bundle-v2`, Swagger UI 5: the first to read
OpenAPI 3.1, which FastAPI writes). The page loads only same-origin scripts, so it keeps the site's
Content-Security-Policy. Without the package (or with an older Swagger UI) there is no docs page;
`/api/v1/openapi.json` is always there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from backend.html import SECURITY_HEADERS

DOCS = "/api/v1/docs"
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js")
MIN_MAJOR = 5
"""Swagger UI 4 refuses OpenAPI 3.1 descriptions ("does not specify a valid version field")."""

PAGE = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Whisper Atlas API</title>
<link rel="stylesheet" href="{DOCS}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{DOCS}/swagger-ui-bundle.js"></script>
<script src="{DOCS}/init.js"></script></body>
</html>
"""
INIT_JS = """window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""
CACHED = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"}


def swagger_assets() -> Path | None:
    """The folder of a Swagger UI >= 5 dist installed as a package, or None."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    folder = Path(swagger_ui_bundle.swagger_ui_path)
    version = re.search(r"(\d+)\.\d+", folder.name)
    if version is None or int(version.group(1)) < MIN_MAJOR:
        return None
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def docs_router(assets: Path) -> APIRouter:
    """The docs page, its initialiser and the two Swagger UI files from `assets`."""
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS)
    def docs_page() -> Response:
        return HTMLResponse(PAGE, headers=SECURITY_HEADERS)

    @router.get(DOCS + "/init.js")
    def docs_init() -> Response:
        return Response(INIT_JS, media_type="text/javascript", headers=CACHED)

    for name in ASSETS:
        router.add_api_route(f"{DOCS}/{name}", _file(assets / name), methods=["GET"])
    return router


def _file(path: Path) -> Callable[[], Response]:
    """A route answering with one fixed file (no parameters: nothing a request could point elsewhere)."""

    def serve() -> Response:
        return FileResponse(path, headers=CACHED)

    return serve
