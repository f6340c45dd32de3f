"""The selected word, shared by every sink and every client (set by a `select` control)."""

from __future__ import annotations

import threading

from ..control import ControlError


class Selection:
    """Index of the selected word in the current run's word list.

    A selection by text resolves to that word's first occurrence.  When a new run has fewer
    words the index is clamped, so "selected" subscribers always get a map.  Listeners
    (sinks that re-send on change) are called with the new index.
    """

    def __init__(self, index: int = 0):
        self._index = max(0, int(index))
        self._words: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._listeners: list = []

    @property
    def index(self) -> int:
        with self._lock:
            if self._words:
                return min(self._index, len(self._words) - 1)
            return self._index

    @property
    def words(self) -> tuple[str, ...]:
        return self._words

    def set_words(self, words) -> None:
        with self._lock:
            self._words = tuple(words)

    def select(self, word: int | str) -> int:
        """Select by index or text; raises :class:`ControlError` if it is not in the run."""
        with self._lock:
            words = self._words
            if isinstance(word, str):
                lowered = [w.lower() for w in words]
                if word.lower() not in lowered:
                    have = ", ".join(words) if words else "no words yet (no run has started)"
                    raise ControlError(f"word {word!r} is not in the current prompt; its words are: {have}")
                index = lowered.index(word.lower())
            else:
                if words and word >= len(words):
                    raise ControlError(f"word index {word} is out of range; the current prompt has {len(words)} words (0..{len(words) - 1})")
                index = word
            self._index = index
            listeners = list(self._listeners)
        for listener in listeners:
            listener(index)
        return index

    def add_listener(self, callback) -> None:
        self._listeners.append(callback)
