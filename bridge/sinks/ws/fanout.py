"""Fan-out of run records to websocket clients: what each client gets, and when to skip.

Sans-I/O, like the ``websockets`` library's protocol layer: nothing here touches a socket or
an event loop.  :class:`FanOut` turns records into messages (``bytes`` for binary frames,
``str`` for JSON) and appends them, as :class:`Batch` es, to each :class:`ClientState`'s
outbox.  Whatever writes to the network (:mod:`bridge.sinks.ws.server`) takes batches from
the outbox and reports when one is on its way (:meth:`ClientState.take`,
:meth:`ClientState.sent`).

The back-pressure rule lives in :class:`ClientState`: while a batch is in flight (the writer
is waiting for the client's socket to drain), at most one step waits behind it — a newer
step replaces the waiting one and is counted in ``dropped`` (:meth:`ClientState.push`); and
after a batch that had to wait, the writer never writes a step while a newer one waits
(:meth:`ClientState.take`).  Batches that are not steps (hello, run_start, run_end with the
final image, status, error) are never dropped.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from ... import protocol as P
from ...frames import RunEnd, RunStart, StepFrame
from ...wordstats import StatsTracker, stats_dicts
from ..selection import Selection


@dataclass(frozen=True, eq=False)
class Batch:
    """Messages written to one client back to back, never split.

    ``droppable`` marks a step's batch; ``t_event`` is when its record reached the sink
    (``time.perf_counter``), for the latency figures.
    """

    messages: tuple
    droppable: bool = False
    t_event: float = field(default_factory=time.perf_counter)

    @property
    def wire_bytes(self) -> int:
        """Bytes on the wire for these messages as unmasked, unfragmented server frames."""
        return sum(_frame_size(len(m.encode("utf-8")) if isinstance(m, str) else len(m)) for m in self.messages)


def _frame_size(payload: int) -> int:
    # RFC 6455 §5.2: 2-byte head, plus a 16- or 64-bit extended length for larger payloads
    return payload + (2 if payload < 126 else 4 if payload < 1 << 16 else 10)


class ClientState:
    """One client's delivery state: its subscription, its outbox, what it missed.

    ``wake`` (optional) is called whenever a batch becomes available, so that a writer can
    sleep while there is nothing to send.
    """

    def __init__(self, peer: str = "?", wake=None):
        self.peer = peer
        self.sub = P.Subscription()
        self.outbox: deque[Batch] = deque()
        self.in_flight = False  # a batch was taken and its writing has not finished
        self.congested = False  # the last batch had to wait for the socket to drain
        self.dropped = 0  # steps skipped because this client fell behind
        self.last_status = ""  # the last status sent, without its "id"
        self._wake = wake or (lambda: None)

    def push(self, batch: Batch) -> None:
        """Queue ``batch``.  A step queued while another batch is in flight replaces the step
        already waiting (newest step wins; the skipped one counts in ``dropped``)."""
        if not batch.messages:
            return
        if batch.droppable and self.in_flight:
            self._skip_steps()
        self.outbox.append(batch)
        self._wake()

    def take(self) -> Batch | None:
        """The next batch to write (it is in flight until :meth:`sent`), or None.

        After a batch that had to wait for the socket, a step is never written while a newer
        one waits (steps queued before the writer came round are skipped too).
        """
        if not self.outbox:
            return None
        while self.congested and self.outbox[0].droppable and any(b.droppable for b in list(self.outbox)[1:]):
            self.outbox.popleft()  # a newer step waits behind it
            self.dropped += 1
        self.in_flight = True
        return self.outbox.popleft()

    def _skip_steps(self) -> None:
        kept = deque(b for b in self.outbox if not b.droppable)
        self.dropped += len(self.outbox) - len(kept)
        self.outbox = kept

    def sent(self, congested: bool = False) -> None:
        """The batch last taken has been handed to the socket; ``congested``: it had to wait."""
        self.in_flight = False
        self.congested = congested


class FanOut:
    """Records in, per-client batches out.

    ``status_fields()`` returns the server-wide fields of a ``status`` message (state, mode,
    settings …); each client's own ``dropped`` and ``subscription`` are added here.
    Each step is encoded once per subscription variant and shared by the clients that have it.
    """

    def __init__(self, selection: Selection | None = None, status_fields=None):
        self.selection = selection or Selection()
        self.status_fields = status_fields or (lambda: {"state": "idle"})
        self.clients: set[ClientState] = set()
        self.encoder = P.FrameEncoder()
        self.stats = StatsTracker()
        # The last run as far as it went, so that a late joiner sees it (:meth:`join`).
        self.start: RunStart | None = None
        self.last_step: StepFrame | None = None
        self.last_stats: tuple = ()  # the word statistics after last_step
        self.end: RunEnd | None = None  # the last run's end, once it has ended

    # ------------------------------------------------------------------ clients

    def join(self, client: ClientState, hello: dict) -> None:
        """A new client: ``hello``, its status, then the last run as far as it went.

        A page opened mid-run or after a run shows that run at once rather than an empty
        one: its ``run_start``, its latest step (maps, preview, metadata) and, once it has
        ended, its final image and ``run_end`` — what a client that had been there all along
        holds after the same messages.  Clients already connected get nothing new.
        """
        self.clients.add(client)
        client.push(Batch((P.encode_json(hello), self._status_text(client, force=True))))
        if self.start is None:
            return
        client.push(Batch((P.encode_json(P.run_start_message(self.start)),)))
        step = self.last_step
        if step is not None and step.run_id == self.start.run_id:
            frames = self.encoder.step_frames(step, client.sub, self.selection.index)
            meta = P.encode_json(P.step_message(step, stats_dicts(self.last_stats))) if client.sub.meta else None
            client.push(Batch((*frames, meta) if meta else tuple(frames), True))
        end = self.end
        if end is not None and end.run_id == self.start.run_id:
            final = self.encoder.final_frame(end, self.start.steps, client.sub)
            text = P.encode_json(P.run_end_message(end))
            client.push(Batch((final, text) if final else (text,)))

    def leave(self, client: ClientState) -> None:
        self.clients.discard(client)

    # ------------------------------------------------------------------ records

    def publish(self, event, t_event: float | None = None) -> None:
        t = time.perf_counter() if t_event is None else t_event
        if isinstance(event, StepFrame):
            self._step(event, t)
        elif isinstance(event, RunStart):
            self.start, self.last_step, self.last_stats, self.end = event, None, (), None
            self.selection.start_run(event.run_id, event.words)
            self.send_all(P.encode_json(P.run_start_message(event)), t)
            self.status_all()
        elif isinstance(event, RunEnd):
            self.end = event
            total = self.start.steps if self.start and self.start.run_id == event.run_id else event.steps_done
            end = P.encode_json(P.run_end_message(event))
            for client in self.clients:
                final = self.encoder.final_frame(event, total, client.sub)
                client.push(Batch((final, end) if final else (end,), t_event=t))
            self.status_all()

    def _step(self, event: StepFrame, t: float) -> None:
        self.last_step = event
        stats = self.stats.update(event)  # every step, so "change" never depends on who is connected
        self.last_stats = stats
        if not self.clients:
            return
        meta = P.encode_json(P.step_message(event, stats_dicts(stats)))
        selected = self.selection.index
        batches: dict = {}  # one batch per subscription variant, shared by its clients
        for client in self.clients:
            key = (client.sub, selected if client.sub.words == "selected" else None)
            if key not in batches:
                frames = self.encoder.step_frames(event, client.sub, selected)
                batches[key] = Batch((*frames, meta) if client.sub.meta else tuple(frames), True, t)
            client.push(batches[key])

    def resend_selected(self) -> None:
        """A new selection shows at once for "selected" subscribers, even between runs."""
        frame = self.last_step
        for client in self.clients:
            if frame is not None and client.sub.words == "selected":
                client.push(Batch(tuple(self.encoder.step_frames(frame, client.sub, self.selection.index)), True))
        self.status_all()

    # ------------------------------------------------------------------ JSON to clients

    def send_all(self, text: str, t_event: float | None = None) -> None:
        t = time.perf_counter() if t_event is None else t_event
        for client in self.clients:
            client.push(Batch((text,), t_event=t))

    def status_all(self) -> None:
        """Every client whose status changed since the last one it got receives the new one."""
        for client in self.clients:
            text = self._status_text(client)
            if text:
                client.push(Batch((text,)))

    def reply_status(self, client: ClientState, request_id=None) -> None:
        """The answer to one client's control: its status, echoing the control's ``id``."""
        client.push(Batch((self._status_text(client, force=True, request_id=request_id),)))

    def reply_error(self, client: ClientState, code: str, message: str, request: str | None = None,
                    request_id=None) -> None:
        detail = {"request": request} if request else {}
        if request_id is not None:
            detail["id"] = request_id
        client.push(Batch((P.encode_json(P.error_message(code, message, **detail)),)))

    def _status_text(self, client: ClientState, force: bool = False, request_id=None) -> str:
        """The client's status as sent; "" when it equals the last one sent and ``force`` is off.

        Live and replay both announce state changes from several places (the control that
        caused it, the runner, the run's end); comparing with what the client already has
        sends each change once.
        """
        fields = dict(self.status_fields())
        fields.setdefault("selected", self.selection.index)
        fields.pop("id", None)
        message = P.status_message(**fields, dropped=client.dropped, subscription=client.sub.to_dict())
        text = P.encode_json(message)
        if text == client.last_status and not force:
            return ""
        client.last_status = text
        if request_id is not None:
            return P.encode_json({**message, "id": request_id})
        return text
