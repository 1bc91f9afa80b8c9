"""Access control of ``mambamim web``: the token on every page load and websocket, loopback default."""

from __future__ import annotations

import base64
import os
import socket

import pytest
from conftest import open_app, start_server

from MambaMIMSegmenterWeb.access import is_loopback, resolve_token

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def guarded_app(sample_scan, tmp_path_factory):
    yield from start_server(sample_scan, tmp_path_factory, token=TOKEN)


def _websocket_status(port: int, cookie: str = "") -> int:
    """The HTTP status a websocket upgrade of /ws gets (101 when accepted)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
        + (f"Cookie: {cookie}\r\n" if cookie else "")
        + "\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def test_without_the_token_a_page_gets_nothing(browser, guarded_app):
    page = browser.new_context().new_page()
    for path in ("", "index.html", "download/labels"):
        response = page.goto(guarded_app.url + path)
        assert response.status == 401, path
        assert "Access token required" in page.content()
        assert "MambaMIM Segmenter</title>" not in page.content()
    wrong = page.goto(guarded_app.url + "?token=not-the-token")
    assert wrong.status == 401
    page.context.close()


def test_the_websocket_needs_the_token(guarded_app):
    assert _websocket_status(guarded_app.port) == 401
    assert _websocket_status(guarded_app.port, "mambamim_token=wrong") == 401


def test_with_the_token_the_app_loads_and_the_link_drops_it(browser, guarded_app):
    context = browser.new_context(viewport={"width": 1400, "height": 850})
    page = context.new_page()
    open_app(page, guarded_app.url + f"?token={TOKEN}")
    assert "token" not in page.url  # redirected: the token is kept in an HttpOnly cookie instead
    cookies = {cookie["name"]: cookie for cookie in context.cookies()}
    assert cookies["mambamim_token"]["httpOnly"] and cookies["mambamim_token"]["sameSite"] == "Strict"
    context.close()


def test_serving_beyond_loopback_always_needs_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    assert resolve_token("127.0.0.1", None) is None
    generated = resolve_token("0.0.0.0", None)
    assert generated and len(generated) >= 24 and generated != resolve_token("0.0.0.0", None)
    assert resolve_token("0.0.0.0", "  given-token ") == "given-token"
    with pytest.raises(ValueError, match="at least 8"):
        resolve_token("0.0.0.0", "short")


def test_uploads_from_another_site_are_refused(page, web_app, sample_scan):
    response = page.request.post(
        web_app.url + "upload?name=evil.nii.gz",
        data=sample_scan.read_bytes(),
        headers={"Origin": "http://attacker.example"},
    )
    assert response.status == 403
    assert page.locator("#volume-name").inner_text().strip() == "ct"
