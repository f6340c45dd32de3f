"""A disk that fills up or turns read-only on cue, simulated at the recorder's I/O boundary.

A test cannot fill a real disk or remount it read-only, so the writer's three doors to the disk
(``bridge.recording.writer._open``, ``_mkdir`` and ``_remove``) are replaced.  Files are real
files in the test's folder until the fault strikes, at the first touch (an open, a write, a
flush, a folder made) of a path the test chose; from then on, until :meth:`FaultyDisk.heal`:

- full (ENOSPC): a file opened is created but backed by ``/dev/full``, the kernel's own full
  device, so every write to it fails in the kernel, however the bytes get there (numpy writes
  a real file through its descriptor); a write to a file opened before lands half
  its bytes, then fails; folders cannot be made; deleting still works.
- read-only (EROFS): nothing can be opened for writing, written, made or deleted.
"""

from __future__ import annotations

import errno
import os
import threading

from bridge.recording import writer as writer_mod

FULL_DEVICE = "/dev/full"


class FaultyDisk:
    def __init__(self, monkeypatch):
        self._real_open, self._real_mkdir, self._real_remove = writer_mod._open, writer_mod._mkdir, writer_mod._remove
        monkeypatch.setattr(writer_mod, "_open", self._open)
        monkeypatch.setattr(writer_mod, "_mkdir", self._mkdir)
        monkeypatch.setattr(writer_mod, "_remove", self._remove)
        self._lock = threading.Lock()
        self._armed = None  # (errno, when(path) -> bool): the fault strikes at the first such touch
        self.fault = None  # errno while the disk fails
        self.struck = threading.Event()

    def fail_from(self, code: int, when=lambda path: True) -> None:
        """From the first touch of a path for which ``when(path)`` holds, fail with ``code``."""
        with self._lock:
            self._armed, self.fault = (code, when), None
            self.struck.clear()

    def heal(self) -> None:
        with self._lock:
            self._armed = self.fault = None

    def touch(self, path) -> int | None:
        """The disk's errno for this touch of ``path`` (None: it works)."""
        with self._lock:
            if self.fault is None and self._armed is not None and self._armed[1](str(path)):
                self.fault, self._armed = self._armed[0], None
                self.struck.set()
            return self.fault

    def check(self, path) -> None:
        code = self.touch(path)
        if code is not None:
            raise OSError(code, os.strerror(code), str(path))

    def _open(self, path, mode, **kw):
        code = self.touch(path)
        if code == errno.EROFS:
            raise OSError(code, os.strerror(code), str(path))
        if code == errno.ENOSPC:
            self._real_open(path, mode).close()  # a full disk still has room for the name …
            return self._real_open(FULL_DEVICE, mode, **kw)  # … and none for a byte
        return _File(self, path, self._real_open(path, mode, **kw))

    def _mkdir(self, path) -> None:
        self.check(path)
        self._real_mkdir(path)

    def _remove(self, path) -> None:
        if self.fault == errno.EROFS:
            self.check(path)
        self._real_remove(path)


class _File:
    """A file opened while the disk worked, whose later writes meet the disk's state."""

    def __init__(self, disk: FaultyDisk, path, f):
        self._disk, self._path, self._f = disk, path, f

    def write(self, data):
        code = self._disk.touch(self._path)
        if code == errno.ENOSPC:  # the disk fills in the middle of this write
            self._f.write(bytes(memoryview(data))[: len(data) // 2])
        if code is not None:
            raise OSError(code, os.strerror(code), str(self._path))
        return self._f.write(data)

    def flush(self):
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
