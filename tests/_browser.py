"""Real headless Chromium for the browser tests (Debian's /usr/bin/chromium driven by Playwright).

Not a test module (leading underscore): shared by tests/test_glsl_particles.py and
tests/test_web_viewer.py.  Tests skip with the reason when Chromium or Playwright is missing;
under BRIDGE_REQUIRE_ALL_TESTS=1 (CI) such a skip fails (see conftest.py).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"

# SwiftShader (software GL inside Chromium) gives WebGL2 + EXT_color_buffer_float with no GPU.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("BRIDGE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def require_browser():
    """(sync_playwright, chromium path) or a pytest skip that names what is missing."""
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -r requirements-dev.txt)")
    return sync_playwright, path


@contextlib.contextmanager
def browser_page(viewport=(1280, 900)):
    """A fresh Chromium profile and one page; console errors are collected on ``page.errors``."""
    sync_playwright, path = require_browser()
    with tempfile.TemporaryDirectory(prefix="bridge-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=path,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            page = context.new_page()
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
            yield page
        finally:
            context.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript"}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path == "/__test__":  # an empty same-origin page for tests that import modules
            body = b"<!doctype html><meta charset=utf-8><link rel=icon href='data:,'><title>test</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@contextlib.contextmanager
def static_server(directory: Path = WEB):
    """Serve ``directory`` over HTTP on 127.0.0.1 (an ephemeral port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
