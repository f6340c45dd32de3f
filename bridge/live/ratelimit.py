"""A token bucket per peer: how often one sender may be answered.

An error reply to a UDP datagram goes to the datagram's source address, which the sender
chooses: unlimited replies would make the bridge a reflector (4 junk bytes drew a 132-byte
reply).  :class:`PeerBudget` lets ``burst`` replies through at once and ``rate`` per second
after that, per peer, and remembers at most ``max_peers`` peers (the least recent is
forgotten, so a flood of spoofed sources cannot grow it).
"""

from __future__ import annotations

import time
from collections import OrderedDict


class PeerBudget:
    def __init__(self, rate: float = 5.0, burst: float = 10.0, max_peers: int = 256, clock=time.monotonic):
        self.rate, self.burst, self.max_peers, self.clock = rate, burst, max_peers, clock
        self._tokens: OrderedDict[object, tuple[float, float]] = OrderedDict()  # peer → (tokens, at)
        self.denied = 0

    def allow(self, peer) -> bool:
        now = self.clock()
        tokens, at = self._tokens.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._tokens[peer] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._tokens) > self.max_peers:
            self._tokens.popitem(last=False)
        if not allowed:
            self.denied += 1
        return allowed
