"""Synthetic batches following the batch contract of docs/interfaces.md, with planted events.

Each query has a random "event" direction; its recording holds that direction inside the
query's windows (plus noise elsewhere) and its text tokens are noisy copies of it, so a model
can learn where the query's moments are.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from amr.config.schema import SystemConfig
from amr.data.dataset import saliency_targets

SALIENCY_PAIRS = 2  # the authors' loader draws two (inside, outside) pairs per query


def report_systems() -> dict[str, SystemConfig]:
    """The trained systems of the repository's params.yaml at the report's widths (paper preset)."""
    from pathlib import Path

    from amr.config.params import Params

    params = Params.load(Path(__file__).resolve().parents[1] / "params.yaml", preset="paper")
    return {name: params.system(name) for name in params.trained_systems()}


def small_config(**components: bool) -> SystemConfig:
    """A narrow SystemConfig (fast on CPU) with the given components switched on."""
    cfg = SystemConfig()
    cfg = replace(
        cfg,
        data=replace(cfg.data, feature_dim=24, text_dim=20),
        backbone=replace(cfg.backbone, hidden_dim=32, heads=4, ffn_dim=64),
        cascade=replace(cfg.cascade, heads=4, ffn_dim=64, max_crop=64),
    )
    return with_switches(cfg, **components)


def with_switches(cfg: SystemConfig, **components: bool) -> SystemConfig:
    """``cfg`` with the named components switched on or off."""
    return replace(cfg, **{name: replace(getattr(cfg, name), enabled=on) for name, on in components.items()})


def no_dropout(cfg: SystemConfig) -> SystemConfig:
    return replace(cfg, backbone=replace(cfg.backbone, dropout=0.0, input_dropout=0.0, attention_dropout=0.0))


def make_batch(
    lengths: list[int],
    windows: list[list[tuple[int, int]]],
    text_lengths: list[int] | None = None,
    feature_dim: int = 24,
    text_dim: int = 20,
    seed: int = 0,
    pad_to: int | None = None,
) -> dict:
    """lengths: frames per recording; windows: per recording, GT windows in whole frames [s, e)."""
    gen = torch.Generator().manual_seed(seed)
    b = len(lengths)
    text_lengths = text_lengths or [5 + (i % 3) for i in range(b)]
    big_l = pad_to or max(lengths)
    big_n = max(text_lengths)
    big_w = max(1, max(len(w) for w in windows))
    audio = torch.zeros(b, big_l, feature_dim + 2)
    audio_mask = torch.zeros(b, big_l, dtype=torch.bool)
    text = torch.zeros(b, big_n, text_dim)
    text_mask = torch.zeros(b, big_n, dtype=torch.bool)
    spans = torch.zeros(b, big_w, 2)
    span_mask = torch.zeros(b, big_w, dtype=torch.bool)
    saliency = torch.zeros(b, big_l)
    pairs = torch.zeros(b, SALIENCY_PAIRS, 2, dtype=torch.long)
    pairs_valid = torch.zeros(b, SALIENCY_PAIRS, dtype=torch.bool)
    for i, (t, n) in enumerate(zip(lengths, text_lengths)):
        event = torch.randn(feature_dim, generator=gen)
        frames = 0.5 * torch.randn(t, feature_dim, generator=gen)
        for j, (s, e) in enumerate(windows[i]):
            frames[s:e] += 2.0 * event
            spans[i, j] = torch.tensor([(s + e) / 2 / t, (e - s) / t])
            span_mask[i, j] = True
        labels, pairs[i], pairs_valid[i] = saliency_targets(windows[i], t, 1.0, np.random.default_rng([seed, i]))
        saliency[i, :t] = labels
        frames = frames / (frames.norm(dim=-1, keepdim=True) + 1e-5)
        steps = torch.arange(t, dtype=torch.float32)
        audio[i, :t] = torch.cat([frames, torch.stack([steps / t, (steps + 1) / t], -1)], -1)
        audio_mask[i, :t] = True
        words = event[:text_dim] + 0.3 * torch.randn(n, text_dim, generator=gen)
        text[i, :n] = words / words.norm(dim=-1, keepdim=True)
        text_mask[i, :n] = True
    return {
        "audio": audio,
        "audio_mask": audio_mask,
        "text": text,
        "text_mask": text_mask,
        "lengths": torch.tensor(lengths),
        "spans": spans,
        "span_mask": span_mask,
        "saliency": saliency,
        "saliency_pairs": pairs,
        "saliency_pairs_valid": pairs_valid,
        "qid": [f"q{i}" for i in range(b)],
        "vid": [f"v{i}" for i in range(b)],
        "query": [f"query {i}" for i in range(b)],
        "duration": torch.tensor(lengths, dtype=torch.float32),
    }


def select(batch: dict, index: list[int], pad_to: int | None = None) -> dict:
    """Sub-batch of ``batch`` (rows ``index``), trimmed or padded to ``pad_to`` frames."""
    out = {}
    for k, v in batch.items():
        out[k] = [v[i] for i in index] if isinstance(v, list) else v[index]
    if pad_to is not None:
        for k in ("audio", "audio_mask", "saliency"):
            v = out[k]
            if v.shape[1] >= pad_to:
                out[k] = v[:, :pad_to]
            else:
                pad = torch.zeros((v.shape[0], pad_to - v.shape[1]) + tuple(v.shape[2:]), dtype=v.dtype)
                out[k] = torch.cat([v, pad], 1)
    return out
