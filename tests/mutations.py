"""Mutation check of the invariants the suite must guard: each one-line mutation is applied to a
scratch copy of the tree and the tests that should catch it are run; every row must say CAUGHT.

    python tests/mutations.py                # all of them
    python tests/mutations.py "wire"         # those whose name contains "wire"
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="mutations-")) / "tree"
MUTATIONS = [
    ("no clamp after bicubic", "bridge/attention/aggregate.py", ".clamp_(min=0).sum(dim=0)", ".sum(dim=0)", ["tests/test_capture_aggregate.py", "tests/test_capture_reference.py"]),
    ("index line before the arrays", "bridge/recording/writer.py",
     "    def step(self, frame: StepFrame) -> None:\n        written = []\n",
     "    def step(self, frame: StepFrame) -> None:\n        self.index.write(json.dumps(index_line(frame, [k.name for k in mapkinds.kinds() if k.name in frame.kinds])) + \"\\n\"); self.index.flush()\n        written = []\n",
     ["tests/test_recording_invariants.py"]),
    ("reader trusts lines without files", "bridge/recording/reader.py",
     "if not all(self.map_path(kind, step).is_file() for kind in _kinds_of(line)):", "if False:", ["tests/test_recording_invariants.py"]),
    ("non-atomic writes", "bridge/recording/writer.py", 'tmp = path.with_name(path.name + ".tmp")', "tmp = path", ["tests/test_recording_invariants.py"]),
    ("stale step kept, new one dropped", "bridge/sinks/ws/fanout.py",
     "        if batch.droppable and self.in_flight:\n            self._skip_steps()\n",
     "        if batch.droppable and self.in_flight and any(b.droppable for b in self.outbox):\n            self.dropped += 1\n            return\n",
     ["tests/test_ws_fanout.py", "tests/test_ws.py"]),
    ("unconditional half kept under CFG", "bridge/families/base.py",
     "            return slice(batch // 2, batch)\n", "            return slice(0, batch // 2)\n", ["tests/test_capture_aggregate.py"]),
    ("lone surrogates kept", "bridge/protocol.py", "    problem = find_unencodable(msg)\n", "    problem = None\n",
     ["tests/test_hostile_input.py", "tests/test_wiretext.py"]),
    ("a preset name may be a path", "bridge/presets.py", 'r"[A-Za-z0-9_-]{1,64}"', 'r".{1,300}"', ["tests/test_hostile_input.py"]),
    ("runs stop only at residual blocks", "bridge/interrupt.py",
     'return hasattr(module, "processor") or any(part in name for part in _LAYER_NAMES)', 'return "Resnet" in name',
     ["tests/test_capture_engine.py"]),
    ("the writer takes no hold on its run", "bridge/recording/writer.py",
     "        self.hold = take_hold(self.folder)  # before the manifest: no prune may take a run being written\n",
     "        pass\n", ["tests/test_retention_sessions.py"]),
    ("self grid sums the heads instead of averaging them", "bridge/attention/selfagg.py",
     "pooled_keys = probs.mean(dim=1).sum(dim=0) @ keys", "pooled_keys = probs.sum(dim=1).sum(dim=0) @ keys",
     ["tests/test_selfgrid.py"]),
    ("generation waits for a free slot of the wire", "bridge/sinks/framering.py",
     "            if not self._free:\n", "            while not self._free:\n                self._lock.release(); __import__('time').sleep(0.01); self._lock.acquire()\n            if False:\n",
     ["tests/test_wire_process.py::test_a_frozen_wire_process_never_holds_up_generation"]),
    ("the wire process never hears a selection made elsewhere", "bridge/sinks/wire_process.py",
     "        self.selection.add_listener(self._selected_here)\n", "        pass\n",
     ["tests/test_wire_process.py::test_controls_and_the_selection_cross_both_ways"]),
    ("self grid keys not split over the cells they overlap", "bridge/selfgrid.py",
     "keys = (overlap / overlap.sum(axis=0, keepdims=True)).T", "keys = overlap.T", ["tests/test_selfgrid.py"]),
    ("region rows not weighted by coverage", "bridge/attention/selfagg.py",
     "self._pending.setdefault(hw, []).append(weights @ rows)", "self._pending.setdefault(hw, []).append((weights > 0).float() @ rows)",
     ["tests/test_capture_self.py"]),
    ("OSC errors answered to any source", "bridge/live/osc_in.py",
     "        return host in self.reply_hosts or _is_loopback(host)\n", "        return True\n", ["tests/test_hostile_input.py"]),
]
missed = 0
for name, rel, old, new, tests in MUTATIONS:
    if sys.argv[1:] and not any(part in name for part in sys.argv[1:]):
        continue
    if WORK.exists():
        shutil.rmtree(WORK)
    shutil.copytree(SRC, WORK, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "runs"), symlinks=True)
    path = WORK / rel
    text = path.read_text()
    assert text.count(old) == 1, (name, text.count(old))
    path.write_text(text.replace(old, new))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], cwd=WORK, capture_output=True, text=True)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-200:]
    print(f"{'CAUGHT' if r.returncode else 'MISSED'}  {name}: {last}", flush=True)
    missed += not r.returncode
shutil.rmtree(WORK.parent, ignore_errors=True)
sys.exit(1 if missed else 0)
