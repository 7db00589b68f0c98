"""Inference: a trained checkpoint + a packed split -> scored windows JSONL + saliency npz.

The same loop scores the validation set after every training epoch, so model selection and
``amr predict`` see exactly the same post-processing (``amr.model.postprocess``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from amr.config.schema import InferenceConfig, SystemConfig, from_dict
from amr.engine.checkpoint import CheckpointError, load_checkpoint
from amr.engine.device import autocast_context, choose_device, move_batch
from amr.evaluation.prediction_files import saliency_path, write_predictions, write_saliency


@torch.no_grad()
def run_inference(
    model: torch.nn.Module,
    loader: DataLoader,
    system_cfg: SystemConfig,
    inference_cfg: InferenceConfig | None = None,
    device: torch.device | str = "cpu",
    amp: bool = False,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Prediction records (file order of the split) and per-query saliency logits."""
    from amr.model.postprocess import predict_windows

    inference_cfg = inference_cfg or InferenceConfig()
    device = torch.device(device)
    was_training = model.training
    model.eval()
    records: list[dict] = []
    saliency: dict[str, np.ndarray] = {}
    try:
        for batch in loader:
            batch = move_batch(batch, device)
            with autocast_context(device, amp):
                out = model(batch)
            out = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                   for k, v in out.items()}
            batch_records, batch_saliency = predict_windows(out, batch, system_cfg, inference_cfg)
            records.extend(batch_records)
            saliency.update(batch_saliency)
    finally:
        model.train(was_training)
    return records, saliency


def ground_truth_records(dataset) -> list[dict]:
    """The queries of a packed split that have windows, in the metric's GT format.

    Windows are the cleaned ones stored by ``amr pack`` (official drop rules applied, ends
    clipped to the features); queries without any window are left out (the metric drops them).
    """
    gt = []
    for row in range(len(dataset.qids)):
        windows = dataset.windows[dataset.window_offsets[row]: dataset.window_offsets[row + 1]]
        if len(windows) == 0:
            continue
        gt.append(
            {
                "qid": dataset.qids[row],
                "query": dataset.queries[row],
                "vid": dataset.vids[row],
                "duration": float(dataset.duration[row]),
                "relevant_windows": np.asarray(windows, dtype=float).tolist(),
            }
        )
    return gt


def load_model_from_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, SystemConfig, dict]:
    """Rebuild the model from the SystemConfig stored in the checkpoint and load its weights."""
    from amr.model import build_model

    ckpt = load_checkpoint(path)
    if "system_config" not in ckpt:
        raise CheckpointError(
            f"{path}: no 'system_config' entry, so the model cannot be rebuilt; use a "
            "best.pt/last.pt written by `amr train`"
        )
    system_cfg = from_dict(SystemConfig, ckpt["system_config"], "system_config")
    model = build_model(system_cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes ({exc}); it was "
            "written by another version of amr"
        ) from None
    model.to(device).eval()
    return model, system_cfg, ckpt


def predict_split(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    batch_size: int = 64,
    device: str = "auto",
    inference_cfg: InferenceConfig | None = None,
    gt_path: str | Path | None = None,
    threads: int = 0,
    workers: int = 0,
) -> dict:
    """Write ``out`` (predictions JSONL) and ``<out>.saliency.npz``; return a summary dict.

    The summary holds ``queries``, ``seconds``, ``queries_per_s`` and, with ``gt_path``,
    ``metrics`` (official metrics against that annotation file).
    """
    from amr.data.dataset import MomentDataset, eval_loader

    if threads > 0:
        torch.set_num_threads(threads)
    dev = choose_device(device)
    model, system_cfg, _ = load_model_from_checkpoint(checkpoint, dev)
    dataset = MomentDataset(data, system_cfg.data, train=False)
    loader = eval_loader(dataset, batch_size, workers)

    t0 = time.perf_counter()
    records, saliency = run_inference(model, loader, system_cfg, inference_cfg, dev)
    seconds = time.perf_counter() - t0

    write_predictions(out, records)
    write_saliency(saliency_path(out), saliency)

    summary = {
        "queries": len(records),
        "seconds": round(seconds, 3),
        "queries_per_s": round(len(records) / max(seconds, 1e-9), 2),
        "device": str(dev),
    }
    if gt_path is not None:
        from amr.evaluation.metrics import evaluate_predictions, load_jsonl

        summary["metrics"] = evaluate_predictions(records, load_jsonl(gt_path))
    return summary

