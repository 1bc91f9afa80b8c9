"""Who may reach the app: the access token, and one session at a time.

Every HTTP request (page, scripts, downloads, uploads) and the websocket pass :class:`AccessGate`'s
aiohttp middleware. With a token set, a request must carry it: as ``?token=`` (the link printed at
start; the gate then sets an HttpOnly, SameSite=Strict cookie and redirects to the same address
without the token, so it stays out of history and logs), as that cookie, or as ``Authorization:
Bearer``. Anything else gets a 401 page with no app content. Websockets and uploads from another
origin are refused (cross-site websocket hijacking, cross-site request forgery). While one session's
websocket is open, a second browser gets a "busy" page (503) instead of sharing the first user's
scene; when the last websocket closes the session ends and its scene is cleared.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "mambamim_token"
TOKEN_PARAMETER = "token"
WEBSOCKET_PATH = "/ws"

_DENIED_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Access token required</title>
</head><body style="font-family:sans-serif;margin:3em"><h1>Access token required</h1>
<p>This MambaMIM Segmenter server needs the link with its access token
(<code>?token=...</code>), as printed by <code>mambamim web</code> when it started.</p></body></html>"""

_BUSY_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>In use</title>
<meta http-equiv="refresh" content="5"></head><body style="font-family:sans-serif;margin:3em">
<h1>This MambaMIM Segmenter is in use</h1><p>Another session is open; each session has its own scene,
and this server holds one at a time. This page retries every 5 seconds.</p></body></html>"""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to enforce: the given one; a new random one when serving beyond loopback without
    one; none on loopback unless given."""
    if token is not None:
        token = token.strip()
        if len(token) < 8:
            raise ValueError("the access token must have at least 8 characters")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


class AccessGate:
    """aiohttp middleware: token check, same-origin websockets, one session at a time."""

    def __init__(self, token: str | None, on_session_end: Callable[[], None] = lambda: None):
        self.token = token
        self.on_session_end = on_session_end
        self.open_sockets = 0

    # -- checks ---------------------------------------------------------------------------------
    def _matches(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), self.token.encode())

    def _presented(self, request: web.Request) -> str | None:
        """Which way the request carries a valid token ("query", "cookie", "header"), or None."""
        if self._matches(request.query.get(TOKEN_PARAMETER)):
            return "query"
        if self._matches(request.cookies.get(COOKIE)):
            return "cookie"
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer ") and self._matches(authorization[7:].strip()):
            return "header"
        return None

    @staticmethod
    def _same_origin(request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if not origin:
            return True  # not a browser; the token still applies
        forwarded = request.headers.get("X-Forwarded-Host")
        return urlsplit(origin).netloc in {request.host, forwarded}

    @staticmethod
    def _is_websocket(request: web.Request) -> bool:
        return request.path == WEBSOCKET_PATH or request.headers.get("Upgrade", "").lower() == "websocket"

    # -- middleware ------------------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler):
        websocket = self._is_websocket(request)
        if self.token is not None:
            way = self._presented(request)
            if way is None:
                if websocket:
                    raise web.HTTPUnauthorized(text="access token required")
                return web.Response(status=401, text=_DENIED_PAGE, content_type="text/html")
            if way == "query" and request.method == "GET" and not websocket:
                # Keep the token out of the address bar, history and referrers.
                query = {k: v for k, v in request.query.items() if k != TOKEN_PARAMETER}
                response = web.HTTPFound(request.rel_url.with_query(query))
                response.set_cookie(
                    COOKIE,
                    self.token,
                    httponly=True,
                    samesite="Strict",
                    secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https",
                )
                return response
        if (websocket or request.method not in ("GET", "HEAD")) and not self._same_origin(request):
            # Another site's page may not drive this one (uploads, websocket), token or not.
            raise web.HTTPForbidden(text="request from another origin refused")
        if websocket:
            if self.open_sockets:
                raise web.HTTPServiceUnavailable(text="another session is open")
            return await self._serve_session(request, handler)
        if self.open_sockets and request.path in ("/", "/index.html"):
            return web.Response(status=503, text=_BUSY_PAGE, content_type="text/html")
        response = await handler(request)
        # The app's pages and data are per patient: never cached by browsers or proxies.
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def _serve_session(self, request: web.Request, handler):
        self.open_sockets += 1
        try:
            return await handler(request)  # returns when the websocket closes
        finally:
            self.open_sockets -= 1
            if not self.open_sockets:
                self.on_session_end()
