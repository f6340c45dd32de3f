"""Who may open a websocket: token, Origin, client cap.  Sans-I/O, checked at the HTTP upgrade.

A refusal is an HTTP status and one sentence, sent instead of ``101 Switching Protocols``:

- **403, token** — a token is set (it must be off 127.0.0.1) and the request's ``?token=`` is
  not it (compared in constant time);
- **403, origin** — the request comes from a web page (it has an ``Origin`` header) that is not
  the bridge's own viewer and not one the operator allowed (``allow_origin``).  Any page open
  in a browser on the show machine can reach the loopback bridge; this keeps it from driving
  the bridge.  Clients that send no ``Origin`` (TouchDesigner, scripts) are not browsers and pass;
- **503, full** — ``max_clients`` websocket clients are already connected.

The bridge's own origins are ``http://H:PORT`` for H in 127.0.0.1, localhost, [::1] and the
address it is bound to; bound to a wildcard (0.0.0.0, ::) also the address the browser used
(its ``Host``) when that is an IP literal.  A host *name* in ``Host`` is never trusted on its
own: a page whose name was re-pointed at 127.0.0.1 (DNS rebinding) would otherwise pass.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, quote, urlsplit

from ...errors import UserError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_CLIENTS = 32


def needs_token(host: str) -> bool:
    """Whether listening on ``host`` requires a token (anything but loopback does)."""
    return host not in LOCAL_HOSTS


def token_ok(path: str, token: str) -> bool:
    """Whether the request path's ``?token=`` is ``token`` (compared in constant time)."""
    try:
        given = parse_qs(urlsplit(path).query).get("token", [""])[0]
    except ValueError:  # not even a URL
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def token_query(token: str) -> str:
    """``?token=…`` with the token percent-encoded (``+`` and ``&`` survive), or ``""``."""
    return f"?token={quote(token, safe='')}" if token else ""


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an ``Origin`` value, lower-cased, default port filled in;
    ``None`` for anything that is not a plain http(s) origin (``null``, a path, garbage)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def _host_key(host_header: str) -> tuple[str, int | None] | None:
    """(IP literal, port) of a ``Host`` header, or ``None`` when it names a host by name."""
    try:
        parts = urlsplit("//" + host_header.strip())
        ipaddress.ip_address(parts.hostname or "")
        return parts.hostname.lower(), parts.port
    except ValueError:
        return None


def check_allowed_origins(origins) -> tuple[tuple[str, str, int], ...] | None:
    """The operator's ``allow_origin`` entries as keys; ``None`` means any (``*``).
    Raises UserError for an entry that is not an origin."""
    keys = []
    for origin in origins:
        if origin.strip() == "*":
            return None
        key = _origin_key(origin)
        if key is None:
            raise UserError(f"allow_origin {origin!r} is not a web origin such as http://show-pc.local:8080")
        keys.append(key)
    return tuple(keys)


@dataclass(frozen=True)
class Refusal:
    status: HTTPStatus
    sentence: str  # for the client (the HTTP body)
    log: str  # for the bridge's log; names no port, so a flood of refusals collapses into one line


class Access:
    """The upgrade checks for one server (``port`` is given per request: it is known once bound)."""

    def __init__(self, host: str, token: str = "", allow_origin=(), max_clients: int = MAX_CLIENTS):
        if needs_token(host) and not token:
            raise UserError(f"listening on {host} (not 127.0.0.1) needs a shared token: add --token SECRET")
        if max_clients < 1:
            raise UserError(f"max_clients must be at least 1, got {max_clients}")
        self.host, self.token, self.max_clients = host, token, max_clients
        self.allowed = check_allowed_origins(allow_origin)

    def own_origin(self, origin: str, port: int, host_header: str = "") -> bool:
        key = _origin_key(origin)
        if key is None or key[0] != "http" or key[2] != port:
            return False
        names = {*LOOPBACK_NAMES, self.host.lower().strip("[]")}
        if key[1].strip("[]") in names - set(WILDCARD_HOSTS):
            return True
        if self.host in WILDCARD_HOSTS:  # the address the browser used, if it is an address
            used = _host_key(host_header)
            return used is not None and used[0].strip("[]") == key[1].strip("[]") and (used[1] or 80) == port
        return False

    def origin_ok(self, origin: str | None, port: int, host_header: str = "") -> bool:
        if origin is None:
            return True  # not a browser: TouchDesigner, scripts
        if self.allowed is None or self.own_origin(origin, port, host_header):
            return True
        return _origin_key(origin) in self.allowed

    def refusal(self, path: str, headers, port: int, connected: int) -> Refusal | None:
        """Why this websocket upgrade is refused, or ``None`` to let it in.  ``headers``: the
        request's (a mapping with ``get``); ``connected``: clients already admitted."""
        if self.token and not token_ok(path, self.token):
            return Refusal(HTTPStatus.FORBIDDEN,
                           "This bridge needs its token: connect to ws://HOST:PORT/?token=SECRET (URL-encoded).\n",
                           "missing or wrong token")
        origin = headers.get("Origin")
        if not self.origin_ok(origin, port, headers.get("Host", "")):
            shown = "".join(c if c.isprintable() else "?" for c in origin[:100])
            return Refusal(HTTPStatus.FORBIDDEN,
                           f"Websocket connections from pages at {shown} are not allowed: the bridge accepts its "
                           "own viewer and the origins given with --allow-origin.\n",
                           f"page origin {shown} is not allowed (--allow-origin)")
        if connected >= self.max_clients:
            return Refusal(HTTPStatus.SERVICE_UNAVAILABLE,
                           f"This bridge already serves its {self.max_clients} websocket clients (max_clients); "
                           "close one or raise --max-clients.\n",
                           f"{self.max_clients} clients already connected (max_clients)")
        return None
