"""Names shared by the recording writer and reader (docs/RECORDING.md)."""

from __future__ import annotations

FORMAT_NAME = "attention-bridge-recording"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
STEPS_INDEX = "steps.jsonl"
PREVIEWS_DIR = "previews"
FINAL_IMAGE = "final.png"
# Each map kind's folder and summary file (daam.npy) are its row in bridge/mapkinds.py.


class RecordingError(Exception):
    """A folder is not a readable recording; the message says why in one sentence."""


def step_name(step: int, ext: str) -> str:
    return f"{step:06d}.{ext}"
