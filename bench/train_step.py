"""Seconds per training step and peak memory per system, on CPU, at the report's sizes.

One step = forward + criterion + backward + gradient clipping + AdamW update, batch 32,
300 frames, 32 text tokens, up to 5 target windows, the report's configuration (the ``paper``
preset, so the Mamba scan uses its C kernel; building it, if not cached, happens in the untimed
warm-up step). Each system runs in its own subprocess so that its peak resident memory is its
own. The figure is the median step time: a shared machine's occasional stalls do not move it.
Like training on CPU, the step uses the fused AdamW and keeps freed memory for reuse
(``amr.engine.cpu_memory``); ``--no-keep-freed-memory`` measures glibc's default behaviour, and
the per-step system time and page faults printed show what that costs.

    python bench/train_step.py [--steps 5] [--systems baseline slot1 slot2 slot3] [--no-keep-freed-memory]

Prints one line per system, then ONE JSON line:
{"baseline": {"s_per_step": x, "peak_mb": y}, "slot1": ..., ...}
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BATCH, FRAMES, TOKENS, WINDOWS = 32, 300, 32, 5


def synthetic_batch(cfg, seed: int = 0) -> dict:
    import torch

    gen = torch.Generator().manual_seed(seed)
    feats = torch.nn.functional.normalize(torch.randn(BATCH, FRAMES, cfg.data.feature_dim, generator=gen), dim=-1)
    t = torch.arange(FRAMES, dtype=torch.float32)
    tef = torch.stack([t / FRAMES, (t + 1) / FRAMES], -1).expand(BATCH, -1, -1)
    text = torch.nn.functional.normalize(torch.randn(BATCH, TOKENS, cfg.data.text_dim, generator=gen), dim=-1)
    counts = torch.randint(1, WINDOWS + 1, (BATCH,), generator=gen)
    span_mask = torch.arange(WINDOWS)[None] < counts[:, None]
    starts = torch.randint(0, FRAMES - 40, (BATCH, WINDOWS), generator=gen)
    widths = torch.randint(2, 40, (BATCH, WINDOWS), generator=gen)
    spans = torch.stack([(starts + widths / 2) / FRAMES, widths / FRAMES], -1) * span_mask[..., None]
    # saliency supervision as the loader gives it (loss.saliency_windows / loss.saliency_pairs)
    from amr.data.dataset import saliency_targets

    rng = np.random.default_rng(seed)
    targets = [saliency_targets([(float(s), float(s + w)) for s, w, m in zip(starts[i], widths[i], span_mask[i]) if m],
                                FRAMES, 1.0, rng, cfg.loss.saliency_windows, cfg.loss.saliency_pairs)
               for i in range(BATCH)]
    saliency, pairs, pairs_valid = (torch.stack(parts) for parts in zip(*targets))
    return {
        "audio": torch.cat([feats, tef], -1),
        "audio_mask": torch.ones(BATCH, FRAMES, dtype=torch.bool),
        "text": text,
        "text_mask": torch.ones(BATCH, TOKENS, dtype=torch.bool),
        "lengths": torch.full((BATCH,), FRAMES),
        "spans": spans,
        "span_mask": span_mask,
        "saliency": saliency,
        "saliency_pairs": pairs,
        "saliency_pairs_valid": pairs_valid,
        "qid": [f"q{i}" for i in range(BATCH)],
        "vid": [f"v{i}" for i in range(BATCH)],
        "query": ["q"] * BATCH,
        "duration": torch.full((BATCH,), float(FRAMES)),
    }


def training_step(model, criterion, optimiser, batch) -> None:
    """One step as training takes it: forward, weighted loss terms, backward, clip 0.1, AdamW."""
    import torch

    terms = criterion(model(batch), batch)
    loss = sum(criterion.weight_dict[k] * v for k, v in terms.items())
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    optimiser.step()


def measure(system: str, steps: int, keep_memory: bool) -> dict:
    import resource

    import torch

    from amr.config.params import Params
    from amr.engine.cpu_memory import keep_freed_memory
    from amr.engine.loop import build_optimizer
    from amr.losses import build_criterion
    from amr.model import build_model

    # as training does on CPU (train.cpu_keep_freed_memory)
    kept = keep_freed_memory() if keep_memory else False
    torch.manual_seed(0)
    params = Params.load(Path(__file__).resolve().parents[1] / "params.yaml", preset="paper")  # the report's widths
    cfg = params.system(system)
    model, criterion = build_model(cfg), build_criterion(cfg)
    optimiser = build_optimizer(list(model.parameters()), 1e-4, 1e-4, torch.device("cpu"))
    batch = synthetic_batch(cfg)
    model.train()

    def step() -> None:
        training_step(model, criterion, optimiser, batch)

    step()  # warm-up: allocations, optimiser state, the scan kernel
    times, system_s, faults = [], [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        system_s.append(after.ru_stime - before.ru_stime)
        faults.append(after.ru_minflt - before.ru_minflt)
    seconds = statistics.median(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"s_per_step": round(seconds, 3), "peak_mb": round(peak_mb, 1), "threads": torch.get_num_threads(),
            "system_s": round(statistics.median(system_s), 2), "page_faults": int(statistics.median(faults)),
            "kept_freed_memory": kept}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--systems", nargs="+", default=["baseline", "slot1", "slot2", "slot3"])
    parser.add_argument("--no-keep-freed-memory", dest="keep_memory", action="store_false",
                        help="leave glibc malloc at its defaults (training sets train.cpu_keep_freed_memory)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.keep_memory)))
        return 0

    results = {}
    for system in args.systems:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", system, "--steps", str(args.steps)]
            + ([] if args.keep_memory else ["--no-keep-freed-memory"]),
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{system:<9} {result['s_per_step']:7.3f} s/step  peak {result['peak_mb']:8.1f} MB  "
              f"system time {result['system_s']:.2f} s/step, {result['page_faults']} page faults/step  "
              f"({result['threads']} threads, batch {BATCH}, {FRAMES} frames, {TOKENS} tokens, "
              f"freed memory kept: {result['kept_freed_memory']})")
        results[system] = {"s_per_step": result["s_per_step"], "peak_mb": result["peak_mb"]}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
