"""The selected word, shared by every sink and every client (set by a `select` control)."""

from __future__ import annotations

import threading

from ..control import ControlError
from ..wiretext import quote, word_list
from ..wordpick import focus_index


class Selection:
    """Index of the selected word in the current run's word list.

    A selection by text resolves to that word's first occurrence.  A new run starts on its
    focus word (:meth:`start_run`); when words are set without a run the index is clamped,
    so "selected" subscribers always get a map.  Listeners
    (sinks that re-send on change) are called with the new index.
    """

    def __init__(self, index: int = 0):
        self._index = max(0, int(index))
        self._words: tuple[str, ...] = ()
        self._run_id: str | None = None
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

    def start_run(self, run_id: str, words) -> int:
        """A run starts: its words, and the selection moves to its focus word
        (:func:`bridge.wordpick.focus_index`).  Every sink that sees the run start calls this;
        only the first call for a run moves the selection, so a word picked since stays."""
        with self._lock:
            if run_id != self._run_id:
                self._run_id = run_id
                self._words = tuple(words)
                self._index = focus_index(self._words)
            return min(self._index, len(self._words) - 1) if self._words else self._index

    def select(self, word: int | str) -> int:
        """Select by index or text; raises :class:`ControlError` if it is not in the run."""
        with self._lock:
            words = self._words
            if isinstance(word, str):
                lowered = [w.lower() for w in words]
                if word.lower() not in lowered:
                    have = word_list(words, 300, sep=", ") if words else "no words yet (no run has started)"
                    raise ControlError(f"word {quote(word)} is not in the current prompt; its words are: {have}")
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

    def follow(self, index: int) -> None:
        """Take an index selected on the other side of a process boundary, unless it is already
        the selection (so the two sides do not echo each other); one the current run no longer
        has is ignored: the next run start sets both sides again."""
        if self.index != index:
            try:
                self.select(index)
            except ControlError:
                pass

    def add_listener(self, callback) -> None:
        self._listeners.append(callback)
