"""Decoding to the encoder's input: mono float32 at the model's rate, cut into 1-s windows.

The recipe is librosa's default loader (SPEC §2.1) without librosa: libsndfile (soundfile)
decodes to float32, channels are averaged, and soxr resamples with its ``HQ`` quality, which is
what ``librosa.load(path, sr=16000)`` uses by default (``res_type="soxr_hq"``), with the same
output length (``ceil(N * sr_out / sr_in)``, zero-padded or cut). ``bench/extract_speed.py
--librosa`` compares the two when librosa is installed.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from amr.util.errors import AmrError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class AudioError(AmrError, ValueError):
    """A recording that cannot be decoded or holds no samples; the message names it.
    ``kind`` is the fault's name in the extraction report."""

    def __init__(self, message: str, kind: str = "audio_unreadable"):
        super().__init__(message)
        self.kind = kind


def decode(source: str | Path | bytes, sample_rate: int, name: str = "") -> np.ndarray:
    """Mono float32 samples of ``source`` (a path or the bytes of a file) at ``sample_rate``."""
    import soundfile as sf
    import soxr

    name = name or str(source)
    try:
        data, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source,
                             dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports every decoding problem its own way
        raise AudioError(f"{name}: cannot decode audio ({exc})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{name}: no audio samples", "audio_empty")
    # librosa.to_mono on librosa's (channels, samples) layout: the same float32 sums
    mono = data[:, 0] if data.shape[1] == 1 else np.mean(data.T, axis=0)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != sample_rate:
        length = int(math.ceil(mono.shape[0] * sample_rate / rate))
        mono = soxr.resample(mono, rate, sample_rate, quality="soxr_hq")
        mono = _fix_length(np.asarray(mono, dtype=np.float32), length)
    if not np.isfinite(mono).all():
        raise AudioError(f"{name}: audio holds NaN or inf samples")
    return mono


def _fix_length(y: np.ndarray, length: int) -> np.ndarray:
    if y.shape[0] >= length:
        return y[:length]
    return np.pad(y, (0, length - y.shape[0]))


def window_count(n_samples: int, window: int) -> int:
    """Non-overlapping windows, the last partial one dropped; at least one (SPEC §2.1)."""
    return max(1, (n_samples - window) // window + 1)


def cut_windows(samples: np.ndarray, window: int) -> np.ndarray:
    """``(T, window)`` float32; a recording shorter than one window is zero-padded to one."""
    count = window_count(samples.shape[0], window)
    if samples.shape[0] < window:
        samples = np.pad(samples, (0, window - samples.shape[0]))
    return np.ascontiguousarray(samples[: count * window].reshape(count, window))
