"""Pre-extracted features in the official npz layout (SPEC §2).

- audio: ``{audio_dir}/{vid}.npz``, key ``features``, float32 (T, 768), one row per clip
- text:  ``{text_dir}/qid{qid}.npz``, key ``last_hidden_state``, float32 (n_tokens, 768)

Every loader checks the array fully (present, readable, right key, 2-D with the expected
width, non-empty, finite) and raises :class:`DataError` naming the file otherwise.
Files are read as bytes once so that the caller can checksum exactly what was used.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from amr.data.annotations import DataError

AUDIO_KEY = "features"
TEXT_KEY = "last_hidden_state"


def audio_feature_path(audio_dir: str | Path, vid: str) -> Path:
    return Path(audio_dir) / f"{vid}.npz"


def text_feature_path(text_dir: str | Path, qid: str) -> Path:
    return Path(text_dir) / f"qid{qid}.npz"  # literal "qid" prefix, as distributed


def read_feature_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: feature file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read feature file ({exc.strerror})") from None


def decode_feature_array(blob: bytes, path: Path, key: str, dim: int) -> np.ndarray:
    """Decode one npz blob and validate the (n, dim) float array stored under ``key``."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            if key not in npz.files:
                raise DataError(f"{path}: no key '{key}' in npz (keys: {sorted(npz.files)})")
            array = npz[key]
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable npz file ({exc})") from None
    if array.ndim != 2 or array.shape[1] != dim:
        raise DataError(f"{path}: '{key}' has shape {array.shape}, expected (n, {dim})")
    if array.shape[0] == 0:
        raise DataError(f"{path}: '{key}' is empty (0 rows)")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: '{key}' has dtype {array.dtype}, expected a float array")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: '{key}' holds NaN or inf values; re-extract this file")
    return np.ascontiguousarray(array, dtype=np.float32)


def load_feature_file(path: str | Path, key: str, dim: int) -> tuple[np.ndarray, bytes]:
    """(validated float32 array, raw file bytes) of one npz feature file."""
    path = Path(path)
    blob = read_feature_bytes(path)
    return decode_feature_array(blob, path, key, dim), blob


def load_audio_features(audio_dir: str | Path, vid: str, dim: int = 768) -> np.ndarray:
    return load_feature_file(audio_feature_path(audio_dir, vid), AUDIO_KEY, dim)[0]


def load_text_features(text_dir: str | Path, qid: str, dim: int = 768) -> np.ndarray:
    return load_feature_file(text_feature_path(text_dir, qid), TEXT_KEY, dim)[0]
