"""The browser viewer over plain HTTP, on the websocket's port: files from one folder.

Sans-I/O: :meth:`StaticFiles.response` maps a request path to a ``websockets`` HTTP
:class:`~websockets.http11.Response`; the server hands it back from ``process_request``.
Nothing outside the folder is ever served (``..`` and encoded ``%2e%2e`` included).  An odd
path (a NUL or other control character, a backslash, an over-long name) gets 400 or 404 with
one plain sentence, never an exception.
"""

from __future__ import annotations

import email.utils
import mimetypes
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.http11 import Response

MAX_PATH = 1024  # characters of a decoded request path; nothing in a viewer folder is longer
MAX_NAME = 255  # characters of one path component (NAME_MAX on Linux and macOS)


def text_response(status: HTTPStatus, text: str) -> Response:
    """A short plain-text answer (errors, refusals) a browser shows as is; the same headers as
    ``websockets``' own ``ServerConnection.respond``."""
    body = text.encode("utf-8")
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", "text/plain; charset=utf-8")])
    return Response(status.value, status.phrase, headers, body)


class StaticFiles:
    """Serves ``root`` (``None``: no viewer installed; every path answers 404 with a hint)."""

    def __init__(self, root=None, hint_url: str = ""):
        self.root = Path(root).resolve() if root else None
        self.hint_url = hint_url  # where a websocket client should connect, for the "no viewer" page

    def response(self, path: str) -> Response:
        """The answer to ``GET path`` (the path part of the URL, query already removed)."""
        if self.root is None or not self.root.is_dir():
            return text_response(HTTPStatus.NOT_FOUND, f"No viewer is installed; connect a websocket client to {self.hint_url}\n")
        shown = "".join(c if c.isprintable() else "?" for c in path[:100])
        rel = unquote(path).lstrip("/") or "index.html"
        if any(not c.isprintable() or c == "\\" for c in rel):
            return text_response(HTTPStatus.BAD_REQUEST, f"Bad path: {shown}\n")
        target = self._file(rel)
        if target is None:
            return text_response(HTTPStatus.NOT_FOUND, f"Not found: {shown}\n")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix in (".js", ".mjs"):
            ctype = "text/javascript"  # module scripts need a JavaScript type whatever the OS's table says
        try:
            body = target.read_bytes()
        except OSError:  # removed or unreadable since it was found
            return text_response(HTTPStatus.NOT_FOUND, f"Not found: {shown}\n")
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache")])
        return Response(200, "OK", headers, body)

    def _file(self, rel: str) -> Path | None:
        """The file ``rel`` names inside the root (a folder: its index.html), or ``None``."""
        if len(rel) > MAX_PATH or any(len(part) > MAX_NAME for part in rel.split("/")):
            return None  # no such file: the file system would refuse the name
        try:
            target = (self.root / rel).resolve()
            if target.is_dir():
                target = target / "index.html"
            if target.is_relative_to(self.root) and target.is_file():
                return target
        except (OSError, ValueError):  # a name the file system refuses
            pass
        return None
