"""Retention: how many recorded runs, or how many bytes of them, a folder of runs may keep.

An installation that records every run fills its disk in weeks (the timelapse preset wrote
about 1 GB in half an hour), so after each recorded run the oldest runs beyond the policy are
deleted.  Only folders that are recordings (they hold a manifest) are ever considered: a
stray folder or file in the root is never touched.  A run is never deleted while it is being
written or replayed: the writer holds :func:`take_hold` from before its manifest exists to its
last file (``protect`` names the runs about to start, for platforms without flock), a reader
holds :func:`hold`, and a folder whose hold cannot be taken is skipped.  Torch-free.

    policy = Retention(keep_runs=500, max_bytes=20 * 2**30)
    deleted = prune("runs/installation", policy, protect=[current_run_folder])
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .format import MANIFEST

log = logging.getLogger(__name__)

HOLD_FILE = ".hold"  # a reader's lock on its run folder (flock where the platform has it)


@dataclass(frozen=True)
class Retention:
    keep_runs: int = 0  # keep at most this many runs (0: any number)
    max_bytes: int = 0  # and at most this many bytes of them (0: any size)

    def __post_init__(self):
        for name in ("keep_runs", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"retention {name} must be a whole number ≥ 0 (0: no limit), got {value!r}")

    @property
    def unlimited(self) -> bool:
        return not self.keep_runs and not self.max_bytes


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def recorded_runs(root: str | os.PathLike) -> list[tuple[Path, float, int]]:
    """(folder, time written, bytes) of every recording directly in ``root``, oldest first."""
    runs = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False):
                manifest = Path(entry.path) / MANIFEST
                with contextlib.suppress(OSError):
                    runs.append((Path(entry.path), manifest.stat().st_mtime, _size(Path(entry.path))))
    return sorted(runs, key=lambda r: (r[1], r[0].name))


def take_hold(folder: str | os.PathLike):
    """A shared lock that keeps ``folder`` from being pruned until the returned file is closed;
    None where the folder cannot take one (a read-only copy: nothing prunes it).  Best effort
    where the platform has no flock: there, deleting an open file fails and the run is skipped."""
    try:
        f = open(Path(folder) / HOLD_FILE, "a+b")
    except OSError:
        return None
    _lock(f, shared=True, wait=True)
    return f


@contextlib.contextmanager
def hold(folder: str | os.PathLike):
    """Keep ``folder`` from being pruned while the ``with`` lasts."""
    f = take_hold(folder)
    try:
        yield
    finally:
        if f is not None:
            f.close()


def _lock(f, shared: bool, wait: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        return True
    flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(f.fileno(), flags)
        return True
    except OSError:
        return False


def _delete_unless_held(folder: Path) -> bool:
    try:
        f = open(folder / HOLD_FILE, "a+b")
    except OSError:
        return False
    with f:
        if not _lock(f, shared=False, wait=False):
            return False
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("retention: could not delete %s: %s", folder.name, exc)
            return False
    return True


def prune(root: str | os.PathLike, policy: Retention, protect=()) -> list[Path]:
    """Delete the oldest recordings in ``root`` beyond ``policy``; returns what was deleted."""
    if policy.unlimited:
        return []
    keep = {Path(p).resolve() for p in protect}
    runs = recorded_runs(root)
    count, total = len(runs), sum(size for _, _, size in runs)
    deleted = []
    for folder, _, size in runs:
        over_count = policy.keep_runs and count > policy.keep_runs
        over_bytes = policy.max_bytes and total > policy.max_bytes
        if not (over_count or over_bytes):
            break
        if folder.resolve() in keep or not _delete_unless_held(folder):
            continue
        deleted.append(folder)
        count, total = count - 1, total - size
    if deleted:
        log.info("retention: deleted %d oldest run(s) (%s); %d run(s), %.1f MB kept in %s",
                 len(deleted), ", ".join(f.name for f in deleted[:3]) + (" …" if len(deleted) > 3 else ""),
                 count, total / 1e6, root)
    return deleted
