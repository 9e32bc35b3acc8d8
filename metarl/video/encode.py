"""Writing a video: :func:`write_video` writes ``.mp4`` (H.264 through imageio-ffmpeg) or
``.gif`` (Pillow) by the file extension, atomically; :func:`check_video_path` validates the path first.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["VIDEO_SUFFIXES", "check_video_path", "write_video"]

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".gif")
"""File extensions :func:`write_video` can write."""


def check_video_path(path: str | os.PathLike[str]) -> Path:
    """Validate an output video path and create its folder.

    Raises:
        ValueError: the extension is not one of :data:`VIDEO_SUFFIXES`, the path
            is a directory, or its folder cannot be created or written.
    """
    out = Path(path)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--out must end in one of {', '.join(VIDEO_SUFFIXES)}, got {str(out)!r}")
    if out.is_dir():
        raise ValueError(
            f"--out {str(out)!r} is a directory; give a file name ending in .mp4 or .gif"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the folder of --out {str(out)!r}: {error}") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write --out {str(out)!r}: folder {str(out.parent)!r} is not writable"
        )
    if out.exists() and not os.access(out, os.W_OK):
        raise ValueError(f"cannot write --out {str(out)!r}: the file exists and is read-only")
    return out


def write_video(
    frames: Iterator[np.ndarray] | Sequence[np.ndarray],
    path: str | os.PathLike[str],
    fps: float = 20.0,
    *,
    quality: float = 6.0,
) -> tuple[int, tuple[int, int]]:
    """Write frames to ``path`` (``.mp4``: H.264 via imageio-ffmpeg; ``.gif``: Pillow).

    Written to a temporary file in the same folder, then renamed, so a failed
    write never leaves a half video under the final name.

    Args:
        frames: ``[height, width, 3]`` uint8 frames, all one size. For mp4 the
            size should be a multiple of 16 on both axes (else ffmpeg pads it).
        path: Output file; see :func:`check_video_path`.
        fps: Frames per second.
        quality: mp4 quality 0..10 (imageio-ffmpeg's scale; 6 keeps sample
            videos at a few hundred KB).

    Returns:
        ``(number of frames, (height, width))`` written.
    """
    import imageio.v2 as imageio
    import imageio.v3 as iio

    out = check_video_path(path)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    suffix = out.suffix.lower()
    handle, temp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=suffix, dir=out.parent)
    os.close(handle)
    count, size = 0, (0, 0)
    try:
        if suffix == ".mp4":
            writer = imageio.get_writer(
                temp_name, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                quality=quality, pixelformat="yuv420p", macro_block_size=16,
            )  # fmt: skip
            append = writer.append_data
        else:
            writer = iio.imopen(temp_name, "w", plugin="pillow")
            duration_ms = round(1000.0 / fps)

            def append(frame: np.ndarray) -> None:
                writer.write(frame, duration=duration_ms, loop=0)

        with writer:
            for frame in frames:
                frame = np.asarray(frame, dtype=np.uint8)
                if count == 0:
                    size = (int(frame.shape[0]), int(frame.shape[1]))
                elif frame.shape[:2] != size:
                    raise ValueError(f"frame {count} has size {frame.shape[:2]}, expected {size}")
                append(frame)
                count += 1
        if count == 0:
            raise ValueError("no frames to write")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)  # mkstemp makes it private; give it the usual mode
        os.replace(temp_name, out)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return count, size
