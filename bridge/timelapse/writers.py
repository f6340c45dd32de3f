"""Video writers chosen by file extension: MP4 (H.264 through imageio's ffmpeg plugin) and GIF.

Both take RGB uint8 frames of one fixed size, one at a time.  H.264 with yuv420p needs even
sides, so frames are padded by one black row/column where needed rather than resampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = {".mp4": "MP4 (H.264)", ".gif": "GIF"}


class UnsupportedFormat(ValueError):
    pass


def open_writer(path: str | Path, fps: float):
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".mp4":
        return Mp4Writer(path, fps)
    if ext == ".gif":
        return GifWriter(path, fps)
    raise UnsupportedFormat(f"cannot write {path.name!r}: the output must end in {' or '.join(FORMATS)}")


def pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


class Mp4Writer:
    def __init__(self, path: Path, fps: float):
        import imageio.v2 as imageio  # imported here: the ffmpeg plugin is only needed for video

        self.path = path
        # macro_block_size=1 stops imageio from resizing; pad_even keeps H.264 happy instead.
        self._w = imageio.get_writer(
            str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
            pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
        )

    def append(self, frame: np.ndarray) -> None:
        self._w.append_data(pad_even(frame))

    def close(self) -> None:
        self._w.close()


class GifWriter:
    """Collects frames and writes a looping GIF on close (Pillow needs them all at once)."""

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.duration_ms = max(20, round(1000.0 / fps))  # browsers clamp faster GIF frames anyway
        self._frames: list[Image.Image] = []

    def append(self, frame: np.ndarray) -> None:
        # An adaptive palette per frame keeps heat-map gradients smooth.
        self._frames.append(Image.fromarray(frame, "RGB").quantize(colors=255, method=Image.Quantize.MEDIANCUT))

    def close(self) -> None:
        if not self._frames:
            return
        first, rest = self._frames[0], self._frames[1:]
        first.save(self.path, save_all=True, append_images=rest, duration=self.duration_ms, loop=0, optimize=False)
        self._frames = []
