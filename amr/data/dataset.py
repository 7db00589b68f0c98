"""torch Dataset over a packed split (see :mod:`amr.data.pack`) and the batch collate.

Targets are normalised by T, the number of (truncated) feature frames: a window [s, e] in
seconds becomes (c, w) = ((s + e) / 2, e - s) / (T * clip_length). Predictions are scaled back
by the same T * clip_length; ``duration`` is carried only for clamping and bookkeeping.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from amr.config.schema import DataConfig
from amr.data.annotations import DataError
from amr.data.pack import FORMAT_VERSION

NORM_EPS = 1e-5


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + NORM_EPS)


def audio_inputs(frames: np.ndarray) -> torch.Tensor:
    """(T, D) raw frames -> (T, D + 2): L2-normalised frames + TEF [t/T, (t+1)/T]."""
    x = torch.as_tensor(frames, dtype=torch.float32)
    n = x.shape[0]
    t = torch.arange(n, dtype=torch.float32)
    return torch.cat([l2_normalise(x), torch.stack([t / n, (t + 1) / n], dim=1)], dim=1)


def text_inputs(tokens: np.ndarray) -> torch.Tensor:
    """(N, D) raw token states -> L2-normalised float32 tensor."""
    return l2_normalise(torch.as_tensor(tokens, dtype=torch.float32))


def span_targets(windows: np.ndarray, n_frames: int, clip_length: float) -> torch.Tensor:
    """(W, 2) windows in seconds -> (W, 2) normalised (centre, width) over T frames."""
    se = torch.as_tensor(windows, dtype=torch.float32).reshape(-1, 2) / (n_frames * clip_length)
    return torch.stack([se.mean(-1), se[:, 1] - se[:, 0]], dim=-1)


def saliency_frames(window, n_frames: int, clip_length: float) -> tuple[int, int]:
    """First and last frame (inclusive) that QD-DETR's data loader marks for one window:
    ``int(start / clip)`` to ``min(int(end / clip), T) - 1``, the first pulled back when it
    lies past the last (a window inside one frame marks the frame before it)."""
    first = int(window[0] / clip_length)
    last = max(0, min(int(window[1] / clip_length), n_frames) - 1)
    return min(first, last), last


def saliency_targets(windows, n_frames: int, clip_length: float, rng: np.random.Generator,
                     which: str = "first", pairs: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Saliency supervision of one query (``loss.saliency_windows`` / ``loss.saliency_pairs``).

    Labels: ``first`` marks the frames of the first window as the authors' (QD-DETR's) loader
    does (:func:`saliency_frames`); ``all`` marks every frame any window overlaps. Pairs for the
    margin term: ``pairs`` (inside, outside) frames drawn uniformly, distinct inside frames (the
    one frame repeated for a one-frame label) and distinct outside frames; 0 draws none (the
    loss then takes every pair).

    Returns labels (T,), pairs (P, 2) long and their validity (P,): a label covering the whole
    recording leaves no outside frame, and then no pair counts. No windows: no labels."""
    labels = torch.zeros(n_frames)
    drawn = torch.zeros(pairs, 2, dtype=torch.long)
    valid = torch.zeros(pairs, dtype=torch.bool)
    windows = np.asarray(windows, dtype=float).reshape(-1, 2)
    if len(windows) == 0:
        return labels, drawn, valid
    if which == "first":
        first, last = saliency_frames(windows[0], n_frames, clip_length)
        labels[first: last + 1] = 1.0
    else:
        for s, e in windows:
            labels[max(int(np.floor(s / clip_length)), 0): min(int(np.ceil(e / clip_length)), n_frames)] = 1.0
    inside = np.flatnonzero(labels.numpy() > 0)
    outside = np.flatnonzero(labels.numpy() == 0)
    if pairs and len(outside) >= pairs and len(inside):
        pos = rng.choice(inside, pairs, replace=False) if len(inside) >= pairs else rng.choice(inside, pairs)
        neg = rng.choice(outside, pairs, replace=False)
        drawn = torch.as_tensor(np.stack([pos, neg], 1), dtype=torch.long)
        valid[:] = True
    return labels, drawn, valid


class MomentDataset(Dataset):
    """Queries of one packed split; each item is one (recording, query) pair.

    ``train=True``: only queries with a valid window; at most ``max_windows`` targets per
    query, re-sampled each epoch from a generator seeded by (seed, epoch, query row), so
    the draw does not depend on the number or order of DataLoader workers.
    ``train=False``: every query in file order (targets: the first ``max_windows`` windows,
    none for the blind evaluation list); saliency labels and pairs follow
    ``saliency_windows``/``saliency_pairs`` (:func:`saliency_targets`).
    Metadata is loaded eagerly; features are read lazily from an HDF5 handle opened once
    per process (``in_memory=True`` loads all features at construction instead).
    ``set_epoch`` reaches DataLoader workers only when they are re-created each epoch
    (the default, ``persistent_workers=False``).
    """

    def __init__(
        self, h5_path: str | Path, data_cfg: DataConfig, train: bool, seed: int = 0,
        in_memory: bool = False, saliency_windows: str = "first", saliency_pairs: int = 2,
    ):
        self.h5_path, self.cfg, self.train, self.seed = Path(h5_path), data_cfg, train, seed
        self.saliency_windows, self.saliency_pairs = saliency_windows, saliency_pairs
        self.epoch = 0
        if not self.h5_path.is_file():
            raise DataError(f"{self.h5_path}: packed split not found; create it with `amr pack`")
        try:
            h5 = h5py.File(self.h5_path, "r")
        except OSError as exc:
            raise DataError(f"{self.h5_path}: not a readable HDF5 file ({exc}); re-run amr pack")
        with h5:
            if "manifest" not in h5.attrs:
                raise DataError(f"{self.h5_path}: no manifest, not written by amr pack")
            self.manifest = json.loads(h5.attrs["manifest"])
            self._check_manifest()
            q = h5["query"]
            self.qids = [s.decode() for s in q["qid"][:]]
            self.queries = [s.decode() for s in q["query"][:]]
            self.vids = [s.decode() for s in q["vid"][:]]
            self.recording = q["recording"][:]
            self.duration = q["duration"][:]
            self.windows = q["windows"][:]
            self.window_offsets = q["window_offsets"][:]
            self.audio_offsets = h5["audio/offsets"][:]
            self.text_offsets = h5["text/offsets"][:]
            trainable = q["trainable"][:]
            self._arrays = (h5["audio/features"][:], h5["text/features"][:]) if in_memory else None
        self.rows = np.flatnonzero(trainable) if train else np.arange(len(self.qids))
        if len(self.rows) == 0:
            raise DataError(
                f"{self.h5_path}: no query has a valid window, so nothing to train on; "
                "load it with train=False (evaluation) or check its .report.json"
            )
        self._h5, self._pid = None, None

    def _check_manifest(self) -> None:
        m, c = self.manifest, self.cfg
        expected = {
            "format_version": FORMAT_VERSION,
            "dims": {"audio": c.feature_dim, "text": c.text_dim},
            "max_audio_frames": c.max_audio_frames,
            "max_text_tokens": c.max_text_tokens,
            "clip_length": c.clip_length,
            "max_gt_length": c.max_gt_length,
        }
        wrong = {k: (m.get(k), v) for k, v in expected.items() if m.get(k) != v}
        if wrong:
            detail = ", ".join(f"{k}: packed {a!r}, config {b!r}" for k, (a, b) in wrong.items())
            raise DataError(
                f"{self.h5_path}: packed with other settings ({detail}); re-run amr pack"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self):  # an open HDF5 handle cannot cross into worker processes
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, None
        return state

    def _features(self, name: str, start: int, stop: int) -> np.ndarray:
        which = 0 if name == "audio" else 1
        if self._arrays is not None:
            return self._arrays[which][start:stop]
        if self._h5 is None or self._pid != os.getpid():  # first read in this process
            h5 = h5py.File(self.h5_path, "r")
            self._h5, self._pid = (h5["audio/features"], h5["text/features"]), os.getpid()
        return self._h5[which][start:stop]

    def targets_for(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(all cleaned windows, the <= max_windows used as targets) of query ``row``.

        Training with more windows than ``max_windows`` takes a random ``max_windows`` of them
        in random order (QD-DETR shuffles them), so the first target, which the saliency
        labels follow, is any of the windows with equal chance."""
        windows = self.windows[self.window_offsets[row]: self.window_offsets[row + 1]]
        k = self.cfg.max_windows
        if len(windows) <= k:
            return windows, windows
        if not self.train:
            return windows, windows[:k]
        rng = np.random.default_rng([self.seed, self.epoch, int(row)])
        return windows, windows[rng.permutation(len(windows))[:k]]

    def __getitem__(self, index: int) -> dict:
        row = int(self.rows[index])
        rec = self.recording[row]
        frames = self._features("audio", self.audio_offsets[rec], self.audio_offsets[rec + 1])
        tokens = self._features("text", self.text_offsets[row], self.text_offsets[row + 1])
        all_windows, targets = self.targets_for(row)
        n, clip = frames.shape[0], self.cfg.clip_length
        # "first": this epoch's first target; pairs drawn per (seed, epoch, query) like the targets
        rng = np.random.default_rng([self.seed, self.epoch if self.train else 0, row, 1])
        labels, pairs, pairs_valid = saliency_targets(
            targets if self.saliency_windows == "first" else all_windows, n, clip, rng,
            self.saliency_windows, self.saliency_pairs)
        return {
            "audio": audio_inputs(frames),
            "text": text_inputs(tokens),
            "spans": span_targets(targets, n, clip),
            "saliency": labels,
            "saliency_pairs": pairs,
            "saliency_pairs_valid": pairs_valid,
            "qid": self.qids[row],
            "vid": self.vids[row],
            "query": self.queries[row],
            "duration": float(self.duration[row]),
        }


def collate_moments(items: list[dict]) -> dict:
    """Pad a list of dataset items into the batch dict of docs/interfaces.md.

    W is at least 1 so that a batch without any target (evaluation list) still has a
    well-formed (B, 1, 2) ``spans`` with ``span_mask`` all False.
    """
    b = len(items)
    lengths = torch.tensor([it["audio"].shape[0] for it in items], dtype=torch.long)
    n_tokens = [it["text"].shape[0] for it in items]
    n_spans = [it["spans"].shape[0] for it in items]
    big_l, big_n, big_w = int(lengths.max()), max(n_tokens), max(max(n_spans), 1)
    audio = torch.zeros(b, big_l, items[0]["audio"].shape[1])
    text = torch.zeros(b, big_n, items[0]["text"].shape[1])
    spans = torch.zeros(b, big_w, 2)
    saliency = torch.zeros(b, big_l)
    for i, it in enumerate(items):
        audio[i, : lengths[i]] = it["audio"]
        text[i, : n_tokens[i]] = it["text"]
        spans[i, : n_spans[i]] = it["spans"]
        saliency[i, : lengths[i]] = it["saliency"]
    positions = torch.arange(big_l)
    return {
        "audio": audio,
        "audio_mask": positions[None] < lengths[:, None],
        "text": text,
        "text_mask": torch.arange(big_n)[None] < torch.tensor(n_tokens)[:, None],
        "lengths": lengths,
        "spans": spans,
        "span_mask": torch.arange(big_w)[None] < torch.tensor(n_spans)[:, None],
        "saliency": saliency,
        "saliency_pairs": torch.stack([it["saliency_pairs"] for it in items]),
        "saliency_pairs_valid": torch.stack([it["saliency_pairs_valid"] for it in items]),
        "qid": [it["qid"] for it in items],
        "vid": [it["vid"] for it in items],
        "query": [it["query"] for it in items],
        "duration": torch.tensor([it["duration"] for it in items], dtype=torch.float32),
    }


def eval_loader(dataset: Dataset, batch_size: int, workers: int = 0) -> DataLoader:
    """Batches of ``dataset`` in file order, for scoring (validation and `amr predict`)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_moments,
        # a private generator so that building this loader never draws from the global RNG
        generator=torch.Generator().manual_seed(0),
    )
