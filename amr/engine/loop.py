"""The inner loops of training: one epoch of optimisation, and validation with the official
metrics (the same inference path as ``amr predict``)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from amr.config.schema import InferenceConfig, SystemConfig, TrainConfig
from amr.engine.device import autocast_context, move_batch
from amr.engine.distributed import DistContext
from amr.util.errors import AmrError


class TrainError(AmrError, RuntimeError):
    """A training run that cannot go on as asked; the message says why and what to do."""


def build_optimizer(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW (§2.4). On CPU the fused implementation: one kernel per step instead of ~10 small
    ops per parameter tensor (same update rule; its state dict loads either way)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cpu" or None)


def weighted_total(terms: dict[str, torch.Tensor], weight_dict: dict[str, float]) -> torch.Tensor:
    """sum_k weight_dict[k] * terms[k]; a term without a weight is reported, not optimised."""
    weighted = [weight_dict[k] * v for k, v in terms.items() if k in weight_dict]
    if not weighted:
        raise TrainError(
            f"the criterion returned no weighted term (terms {sorted(terms)}, weights "
            f"{sorted(weight_dict)})"
        )
    return torch.stack([w.float() for w in weighted]).sum()


def enabled_loss_terms(weight_dict: dict[str, float], seen_terms) -> list[str]:
    return sorted(k for k in seen_terms if weight_dict.get(k, 0) != 0)


def train_one_epoch(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    train_cfg: TrainConfig,
    ctx: DistContext,
    reporter,
    epoch: int,
    on_step=None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean weighted loss and mean of every term.
    ``on_step(step)`` is called after each optimiser step (fault injection in tests)."""
    criterion_params = [p for p in criterion.parameters() if p.requires_grad]
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    for batch in loader:
        batch = move_batch(batch, ctx.device)
        with autocast_context(ctx.device, train_cfg.amp):
            out = model(batch)
            terms = criterion(out, batch)
            loss = weighted_total(terms, criterion.weight_dict)
        if not torch.isfinite(loss):
            raise TrainError(
                f"epoch {epoch + 1}: the loss is {loss.item()} (terms "
                f"{ {k: float(v) for k, v in terms.items()} }); lower the learning rate or "
                "check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ctx.distributed and criterion_params:  # DDP only synchronises the model's grads
            _average_gradients(criterion_params, ctx.world_size)
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
        optimizer.step()
        steps += 1
        values = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        reporter.step(values)
        if on_step is not None:
            on_step(steps)
    return {k: v / max(steps, 1) for k, v in sums.items()}


# How model selection scores a validation epoch: fixed, not params.yaml's ``inference:`` (which
# only decides how test and evaluation predictions are written, and so never re-trains): the
# authors' choice, the 10 best windows of each query scored by the foreground probability, or in
# pre-training blended half-and-half with the re-ranking score where the system re-ranks.
SELECTION_SCORING = {"pretrain": InferenceConfig(rerank_alpha=0.5), "finetune": InferenceConfig()}


def validate(model: torch.nn.Module, loader: DataLoader, system_cfg: SystemConfig,
             gt: list[dict], device: torch.device, amp: bool, stage: str = "finetune") -> dict[str, float]:
    """Official metrics of ``model`` on the validation split, scored as :data:`SELECTION_SCORING`
    says for ``stage`` (model selection), and the ranking diagnostics of :mod:`amr.evaluation.ranking`."""
    from amr.engine.predict import run_inference
    from amr.evaluation.metrics import evaluate_predictions
    from amr.evaluation.ranking import MemoryProbe, ranking_diagnostics

    probe = MemoryProbe(model)
    try:
        records, _ = run_inference(model, loader, system_cfg, SELECTION_SCORING[stage], device, amp)
    finally:
        probe.close()
    return {**evaluate_predictions(records, gt), **ranking_diagnostics(records, gt),
            "memory_variation": probe.mean()}


def _average_gradients(params, world_size: int) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size
