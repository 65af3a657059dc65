"""ASGI middleware that keeps requests harmless: a same-origin rule for POSTs, and errors without internals.

`OriginCheck`: a browser sends `Origin` with every POST, so a POST whose Origin is neither the server's own
address (and that address a name the server answers to: loopback, the configured host, or any when it
listens on every interface, so DNS rebinding gains nothing) nor one of `allowed_origins` is refused with 403
before it reaches a route; requests without an Origin (curl, scripts, tests) are not a browser's and pass.
`UnexpectedErrors`: an exception no handler turned into an answer becomes a 500 with a short message and an
error id, logged once with its traceback under that id; the client never sees a traceback or a server path.
A client that disconnects mid-request is noted quietly.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import public_message
from backend.html import render
from backend.settings import Settings

log = logging.getLogger("whisper_atlas.server")

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_INTERFACE = frozenset({"0.0.0.0", "::", ""})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def wants_json(path: str) -> bool:
    return path.startswith("/api/") or path == "/healthz"


def error_response(request: Request, status: int, detail: str) -> Response:
    """`{"detail": ...}` for the API, the error page otherwise; server folders are cut from `detail`."""
    detail = public_message(detail, request.app.state.settings)
    if wants_json(request.url.path):
        return JSONResponse({"detail": detail}, status_code=status)
    template = "no_atlas.html" if status == 503 else "error.html"
    return render(request, template, status_code=status, status=status, detail=detail)


class OriginCheck:
    """403 for a state-changing request from a foreign Origin (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.allowed = {origin.rstrip("/").lower() for origin in settings.allowed_origins}
        self.any_host = settings.host in ANY_INTERFACE
        self.hosts = LOOPBACK_HOSTS | {settings.host.lower()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING and not self._allowed(scope):
            message = "cross-origin request refused: send it from this server's own pages"
            await error_response(Request(scope), 403, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is None:
            return True
        origin_text = origin.decode("latin-1").rstrip("/").lower()
        if origin_text in self.allowed:
            return True
        host = headers.get(b"host", b"").decode("latin-1").lower()
        own = f"{scope.get('scheme', 'http')}://{host}"
        if origin_text != own:
            return False
        try:
            return self.any_host or (urlsplit(own).hostname or "") in self.hosts
        except ValueError:  # a Host header that is no host name
            return False


class UnexpectedErrors:
    """500 with an error id for any exception that escapes the app (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            log.info("client left during %s %s", scope["method"], scope["path"])
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("unexpected error %s in %s %s", error_id, scope["method"], scope["path"])
            if not started:
                detail = f"unexpected server error (id {error_id}): please retry or report it"
                await error_response(Request(scope), 500, detail)(scope, receive, send)
