"""Recordings: a run on disk, written step by step, readable with numpy and json alone.

See docs/RECORDING.md for the format.
"""

from .format import FORMAT_NAME, FORMAT_VERSION, RecordingError
from .reader import Recording, load_recording, recording_with_steps
from .writer import Recorder

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "Recorder", "Recording", "RecordingError", "load_recording", "recording_with_steps"]
