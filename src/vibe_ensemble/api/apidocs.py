"""The interactive API docs at /api/v1/docs: Swagger UI served from this server alone.

The assets come from the `fastapi-offline` package (a pinned dependency that ships Swagger UI
5.32, which reads OpenAPI 3.1; only its static files are used),
the start-up script is ours (`/static/api-docs.js`), and the page has no inline script, so the
dashboard's Content-Security-Policy (`'self'` only) covers it: no third-party script runs on
this origin, and the page works offline.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

DOCS_PATH = "/api/v1/docs"
ASSETS = DOCS_PATH + "/assets"
# The only files served from the package, with their media types.
FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon.png": "image/png",
}
PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Vibe Ensemble API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<noscript><p>The API description: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a></p></noscript>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    folder = Path(str(files("fastapi_offline") / "static"))

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in FILES:
            raise HTTPException(404, f"{name!r} is not one of the API docs' files")
        return FileResponse(folder / name, media_type=FILES[name], headers={"Cache-Control": "max-age=86400"})
