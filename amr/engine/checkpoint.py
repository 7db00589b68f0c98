"""Atomic checkpoint files, RNG state capture and the resume guard.

A checkpoint is a plain dict saved with ``torch.save`` through :func:`amr.util.io.atomic_path`, so
that a kill or power loss at any moment leaves either the previous complete file or the new
one, never a torn file. It holds only tensors, numbers, strings, None and lists/tuples/dicts of
them, so it loads with ``torch.load(..., weights_only=True)``, which executes no pickled code.
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amr.util.errors import AmrError
from amr.util.io import atomic_path


class CheckpointError(AmrError, RuntimeError):
    """A checkpoint that cannot be used as asked; the message names the file and the fix."""


class PickledCheckpointError(CheckpointError):
    """A checkpoint of an older amr that holds pickled Python objects (refused by a weights-only
    load): it can only be replaced, by training again."""


def atomic_save(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise PickledCheckpointError(
            f"{path}: holds pickled Python objects, which a weights-only load refuses ({first_line}); "
            "it was written by an older amr: delete it (or train with --restart) to train again"
        ) from None
    except Exception as exc:  # torch raises several types for a corrupt file
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); delete it to start over"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not an amr checkpoint (no 'model' entry)")
    return ckpt


# ---------------------------------------------------------------------------------------------
# RNG states
# ---------------------------------------------------------------------------------------------
def capture_rng_state() -> dict:
    """Every generator's state as plain values (numpy's key array as an int64 tensor)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, tuple of ints, None or float)
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Resume guard
# ---------------------------------------------------------------------------------------------
def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def describe_differences(saved: dict, current: dict, limit: int = 8) -> str:
    """Human-readable list of the keys whose values differ between two nested dicts."""
    a, b = flatten(saved), flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    if not diffs:
        return "(no field differs; the checkpoint was written by another version of amr)"
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor of a state dict (name, dtype, shape, bytes): equal iff identical."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    return state_digest(module.state_dict())
