"""Control messages from websocket clients: validate, apply, answer.

Sans-I/O: :meth:`Incoming.handle` takes one received message (``str`` or ``bytes``) and the
sender's :class:`~bridge.sinks.ws.fanout.ClientState`; answers go to the sender's outbox
through :class:`~bridge.sinks.ws.fanout.FanOut`.  Every message gets exactly one answer: an
``error`` naming what was wrong, or the sender's ``status``.  A control may carry an ``id``
(a string or a number); the answer echoes it, so a client can tell which answer is whose.
Nothing a client sends raises out of here.
"""

from __future__ import annotations

import logging
import math

from ... import protocol as P
from ...control import KINDS, Control, ControlError, parse_json_control
from ...errors import UserError
from ...wiretext import clip
from .fanout import ClientState, FanOut

log = logging.getLogger("bridge.sinks.websocket")

MAX_CONTROL = 256 * 1024  # room for a 10 000-word prompt, so its error names the word count
MAX_ID = 256  # characters of a text id


class Incoming:
    """``controller(control)`` receives every valid control except subscribe/status/select
    (handled here); it may raise :class:`UserError` or :class:`ControlError` to refuse it."""

    def __init__(self, fanout: FanOut, controller=None, max_control: int = MAX_CONTROL):
        self.fanout = fanout
        self.controller = controller
        self.max_control = max_control

    def handle(self, client: ClientState, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return self._error(client, "bad_message", "binary messages are not accepted; send JSON text control messages (docs/PROTOCOL.md)")
        if len(message) > self.max_control:
            return self._error(client, "too_large", f"a message of {len(message)} characters is over the {self.max_control}-character limit for control messages")
        try:
            msg = P.decode_json(message)
        except P.ProtocolError as exc:
            return self._error(client, "bad_message", str(exc))
        kind = msg["type"] if msg["type"] in KINDS else None  # echoed as "request" only when it is a real one
        request_id = msg.pop("id", None)
        if not _valid_id(request_id):
            return self._error(client, "invalid_value", f'"id" must be a string of at most {MAX_ID} characters or a finite number', kind)
        try:
            control = parse_json_control(msg)
        except ControlError as exc:
            return self._error(client, exc.code, str(exc), kind, request_id)
        self.apply(client, control, request_id)

    def apply(self, client: ClientState, control: Control, request_id=None) -> None:
        """Apply one valid control for ``client``; answer with its status or an error."""
        fanout = self.fanout
        try:
            if control.kind == "subscribe":
                client.sub = P.Subscription.from_dict(control.values["subscription"], base=client.sub)
            elif control.kind == "select":
                fanout.selection.select(control.values["word"])  # its listener re-sends the selected maps
            elif control.kind != "status":
                if self.controller is None:
                    raise ControlError(f"{control.kind} is not available here", "unknown_type")
                self.controller(control)
        except ControlError as exc:
            return self._error(client, exc.code, str(exc), control.kind, request_id)
        except (UserError, P.ProtocolError) as exc:
            return self._error(client, "invalid_value", str(exc), control.kind, request_id)
        except Exception as exc:  # a bug in a controller must not end the connection
            log.exception("control %s failed", control.kind)
            return self._error(client, "failed", f"{control.kind} failed: {exc}", control.kind, request_id)
        fanout.reply_status(client, request_id)
        if control.kind not in ("subscribe", "status"):  # a change others see: their status too
            fanout.status_all()

    def _error(self, client: ClientState, code: str, message: str, request: str | None = None, request_id=None) -> None:
        log.warning("refused message from websocket client %s: %s", client.peer, clip(message))
        self.fanout.reply_error(client, code, message, request, request_id)


def _valid_id(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return len(value) <= MAX_ID
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)
