"""A disk that fills up or turns read-only on cue, simulated at the recorder's I/O boundary.

A test cannot fill a real disk or remount it read-only, so the writer's two doors to the disk
(``bridge.recording.writer._open``, ``_mkdir`` and ``_remove``) are replaced.  The files are
real files in the test's folder; from a chosen write on, every write, flush and folder creation
fails with ``OSError(ENOSPC)`` (full: the failing write lands half its bytes first, deleting
still works) or ``EROFS`` (read-only: no file can be created or deleted), until
:meth:`FaultyDisk.heal`.
"""

from __future__ import annotations

import errno
import os
import threading

from bridge.recording import writer as writer_mod


class FaultyDisk:
    def __init__(self, monkeypatch):
        self._real_open, self._real_mkdir, self._real_remove = writer_mod._open, writer_mod._mkdir, writer_mod._remove
        monkeypatch.setattr(writer_mod, "_open", self._open)
        monkeypatch.setattr(writer_mod, "_mkdir", self._mkdir)
        monkeypatch.setattr(writer_mod, "_remove", self._remove)
        self._lock = threading.Lock()
        self._armed = None  # (errno, when(path) -> bool): the fault strikes at the first such write
        self.fault = None  # errno while the disk fails
        self.struck = threading.Event()
        self.refused = 0  # operations that failed

    def fail_from(self, code: int, when=lambda path: True) -> None:
        """From the first write to a path for which ``when(path)`` holds, fail with ``code``."""
        with self._lock:
            self._armed, self.fault = (code, when), None
            self.struck.clear()

    def heal(self) -> None:
        with self._lock:
            self._armed = self.fault = None

    def check(self, path) -> None:
        """Raise the disk's error if it is failing (or starts failing at this write to ``path``)."""
        with self._lock:
            if self.fault is None and self._armed is not None and self._armed[1](str(path)):
                self.fault, self._armed = self._armed[0], None
                self.struck.set()
            if self.fault is None:
                return
            self.refused += 1
            code = self.fault
        raise OSError(code, os.strerror(code), str(path))

    def _open(self, path, mode, **kw):
        if self.fault == errno.EROFS:
            self.check(path)
        return _File(self, path, self._real_open(path, mode, **kw))

    def _mkdir(self, path) -> None:
        self.check(path)
        self._real_mkdir(path)

    def _remove(self, path) -> None:
        if self.fault == errno.EROFS:
            self.check(path)
        self._real_remove(path)


class _File:
    """A real open file whose writes go through the faulty disk."""

    def __init__(self, disk: FaultyDisk, path, f):
        self._disk, self._path, self._f = disk, path, f

    def write(self, data):
        try:
            self._disk.check(self._path)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:  # the disk fills in the middle of this write
                self._f.write(bytes(memoryview(data))[: len(data) // 2])
            raise
        return self._f.write(data)

    def flush(self):  # before every fsync, and before Pillow writes to the file's descriptor
        self._disk.check(self._path)
        return self._f.flush()

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)
