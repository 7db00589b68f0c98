"""What Table 1 and the Table-2 grid cost at the report's recipe (the ``paper`` preset).

Measured here, per system: seconds per training step on this CPU and the floating-point
operations of one step (forward + criterion + backward, counted by
``torch.utils.flop_counter.FlopCounterMode``), both at batch 32 for the two kinds of recording
the schedule trains on: Clotho-Moment pre-training clips (60 one-second frames) and CASTELLA
fine-tuning recordings (300 frames). Counted from params.yaml and ``amr.reporting.ablations``:
the training runs of Table 1 and of every Table-2 row that trains (reused rows and
inference-only rows train nothing), each ``epochs x ceil(queries / batch)`` steps.

Estimated, and labelled so: GPU hours as FLOPs / (``--gpu-tflops`` x ``--utilisation``). A model
this small rarely keeps a GPU busy (kernel launches, the Hungarian matching on the CPU), so the
figure is a lower bound; ``bench/gpu_check.sh`` measures the real step time on a GPU.

    python bench/grid_cost.py [--steps 2] [--pretrain-queries 37900] [--finetune-queries 2182]

Prints a table, then ONE JSON line:
{"systems": {name: {"cpu_s_per_step": {...}, "gflop_per_step": {...}}}, "runs": ..., "cpu_hours": ...,
 "gpu_hours_estimate": ...}
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
FRAMES = {"pretrain": 60, "finetune": 300}  # Clotho-Moment clips are 1 minute, CASTELLA up to 5


def measure(system: str, steps: int) -> dict:
    """CPU seconds and GFLOP of one paper-preset training step, per stage's recording length."""
    import torch
    import train_step
    from torch.utils.flop_counter import FlopCounterMode

    from amr.config.params import Params
    from amr.engine.loop import build_optimizer
    from amr.losses import build_criterion
    from amr.model import build_model

    torch.manual_seed(0)
    cfg = Params.load(ROOT / "params.yaml", preset="paper").system(system)
    out = {"cpu_s_per_step": {}, "gflop_per_step": {}}
    for stage, frames in FRAMES.items():
        train_step.FRAMES = frames  # the synthetic batch's recording length
        batch = train_step.synthetic_batch(cfg)
        model, criterion = build_model(cfg), build_criterion(cfg)
        optimiser = build_optimizer(list(model.parameters()), 1e-4, 1e-4, torch.device("cpu"))
        model.train()

        train_step.training_step(model, criterion, optimiser, batch)  # warm-up: allocations, kernels
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            train_step.training_step(model, criterion, optimiser, batch)
            times.append(time.perf_counter() - start)
        counter = FlopCounterMode(display=False)
        with counter:
            terms = criterion(model(batch), batch)
            sum(criterion.weight_dict[k] * v for k, v in terms.items()).backward()
        out["cpu_s_per_step"][stage] = round(statistics.median(times), 3)
        # counted: matmuls, convolutions and attention; the selective scan's elementwise
        # recurrence is not, so Mamba systems are undercounted by a few percent
        out["gflop_per_step"][stage] = round(counter.get_total_flops() / 1e9, 2)
    return out


def training_runs(params) -> list[tuple[str, str]]:
    """(row, system) of every training run: Table 1, then each Table-2 row that trains."""
    from amr.reporting.ablations import GRID

    runs = [("table1", name) for name in params.trained_systems()
            for _ in range(len(params.seeds(name)))]
    for row in GRID:
        if row.same_as:
            continue
        trained = {key.lstrip("+").split(".")[1] for key in row.overrides if key.lstrip("+").startswith("systems.")}
        trained &= set(params.trained_systems())
        for system in sorted(trained):
            runs += [(row.name, system)] * len(params.seeds(system))
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2, help="timed steps per system and stage")
    ap.add_argument("--pretrain-queries", type=int, default=37900, help="Clotho-Moment train (SPEC §1)")
    ap.add_argument("--finetune-queries", type=int, default=2182, help="CASTELLA train")
    ap.add_argument("--gpu-tflops", type=float, default=67.0, help="GPU float32 peak (H100/H200 SXM: 67)")
    ap.add_argument("--utilisation", type=float, default=0.3, help="assumed share of the peak reached")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps)))
        return 0

    from amr.config.params import Params

    params = Params.load(ROOT / "params.yaml", preset="paper")
    batch = params.train.batch_size
    queries = {"pretrain": args.pretrain_queries, "finetune": args.finetune_queries}
    steps = {stage: params.schedule(stage).epochs * math.ceil(queries[stage] / batch) for stage in FRAMES}
    runs = training_runs(params)
    systems = sorted({system for _, system in runs}, key=params.trained_systems().index)
    measured = {}
    for system in systems:
        proc = subprocess.run([sys.executable, __file__, "--child", system, "--steps", str(args.steps)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        measured[system] = json.loads(proc.stdout.strip().splitlines()[-1])
        m = measured[system]
        print(f"{system:<9} CPU s/step pretrain {m['cpu_s_per_step']['pretrain']:6.3f} finetune "
              f"{m['cpu_s_per_step']['finetune']:6.3f}   GFLOP/step pretrain "
              f"{m['gflop_per_step']['pretrain']:8.1f} finetune {m['gflop_per_step']['finetune']:8.1f}")

    # a finetune run of a system is preceded by its pre-training; seeds of one system share it
    pretrain_runs = {(row, system) for row, system in runs}
    cpu_s = flop = 0.0
    for row, system in pretrain_runs:
        cpu_s += steps["pretrain"] * measured[system]["cpu_s_per_step"]["pretrain"]
        flop += steps["pretrain"] * measured[system]["gflop_per_step"]["pretrain"] * 1e9
    for row, system in runs:
        cpu_s += steps["finetune"] * measured[system]["cpu_s_per_step"]["finetune"]
        flop += steps["finetune"] * measured[system]["gflop_per_step"]["finetune"] * 1e9
    gpu_hours = flop / (args.gpu_tflops * 1e12 * args.utilisation) / 3600
    print(f"\n{len(pretrain_runs)} pre-training and {len(runs)} fine-tuning runs (Table 1 + grid), "
          f"{steps['pretrain']} + {steps['finetune']} steps each at batch {batch}")
    print(f"on this CPU: {cpu_s / 3600:,.0f} hours")
    print(f"total {flop / 1e15:,.1f} PFLOP -> at {args.utilisation:.0%} of {args.gpu_tflops:g} TFLOPS: "
          f"{gpu_hours:,.1f} GPU hours (estimate, lower bound)")
    print(json.dumps({"systems": measured, "steps": steps, "pretrain_runs": len(pretrain_runs),
                      "finetune_runs": len(runs), "cpu_hours": round(cpu_s / 3600, 1),
                      "pflop": round(flop / 1e15, 2), "gpu_hours_estimate": round(gpu_hours, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
