"""How fast does the span head fit? Repeated steps on ONE fixed batch of fine-tuning queries.

If the detector could not localise short moments at all (a bug in the targets, the matching or
the losses), the gIoU loss on a batch it sees again and again would stay put; if it falls
steadily but slowly, the number of steps is what limits fine-tuning. Prints, every ``--every``
steps, the matched span L1 and gIoU losses of the last decoder layer, the label and saliency
losses, and R1@0.5 / R1@0.7 and the median top-1 width of the model's own predictions on that
batch (eval mode); ends with ONE JSON line.

    python bench/span_fit.py PACKED_TRAIN.h5 [--init PRETRAINED.pt] [--queries 16] [--steps 150]

e.g. on the split `bench/learning_check.py` packs (real CASTELLA annotations):
    python bench/span_fit.py runs/learning_check/packed/finetune_train.h5 \
        --init runs/learning_check/runs/pretrain/baseline/best.pt
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train", help="packed fine-tuning split")
    ap.add_argument("--init", default=None, help="start from these weights (a pre-training best.pt)")
    ap.add_argument("--system", default="baseline")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--queries", type=int, default=16, help="the batch: the split's first N queries")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--lr", type=float, default=None, help="default: params.yaml's fine-tuning lr")
    args = ap.parse_args()

    from torch.utils.data import Subset

    from amr.config.params import Params
    from amr.data.dataset import MomentDataset, collate_moments, eval_loader
    from amr.engine.checkpoint import load_checkpoint
    from amr.engine.loop import build_optimizer, weighted_total
    from amr.engine.predict import ground_truth_records, run_inference
    from amr.engine.train import seed_everything
    from amr.evaluation.metrics import evaluate_predictions
    from amr.losses import build_criterion
    from amr.model import build_model

    params = Params.load(args.params)
    cfg, train_cfg = params.system(args.system), params.train
    lr = args.lr if args.lr is not None else params.schedule("finetune").lr
    if train_cfg.threads > 0:
        torch.set_num_threads(train_cfg.threads)
    seed_everything(train_cfg.seed)
    model, criterion = build_model(cfg), build_criterion(cfg)
    if args.init:
        model.load_state_dict(load_checkpoint(args.init)["model"])
    weights = [p for m in (model, criterion) for p in m.parameters() if p.requires_grad]
    optimizer = build_optimizer(weights, lr, train_cfg.weight_decay, torch.device("cpu"))

    train = MomentDataset(args.train, cfg.data, train=True, seed=train_cfg.seed, in_memory=True)
    scored = MomentDataset(args.train, cfg.data, train=False, in_memory=True)
    rows = list(range(min(args.queries, len(train))))
    batch = collate_moments([train[i] for i in rows])
    wanted = {scored.qids[int(train.rows[i])] for i in rows}
    gt = [g for g in ground_truth_records(scored) if g["qid"] in wanted]
    subset = Subset(scored, [int(train.rows[i]) for i in rows])

    history, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        model.train()
        terms = criterion(model(batch), batch)
        loss = weighted_total(terms, criterion.weight_dict)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(weights, train_cfg.grad_clip)
        optimizer.step()
        if step % args.every and step != args.steps:
            continue
        records, _ = run_inference(model, eval_loader(subset, len(rows)), cfg)
        metrics = evaluate_predictions(records, gt)
        width = float(np.median([r["pred_relevant_windows"][0][1] - r["pred_relevant_windows"][0][0]
                                 for r in records]))
        row = {"step": step, **{k.removeprefix("loss_"): round(terms[k].item(), 4) for k in
                                ("loss_span", "loss_giou", "loss_label", "loss_saliency")},
               "R1@0.5": metrics["R1@0.5"], "R1@0.7": metrics["R1@0.7"], "top1_width_s": width,
               "seconds": round(time.perf_counter() - t0, 1)}
        history.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    print(json.dumps({"system": args.system, "queries": len(rows), "lr": lr, "init": args.init,
                      "history": history}))


if __name__ == "__main__":
    main()
