"""Where a demo training step spends its time: per-phase seconds per step for each system, at the
demo preset's widths on 300-frame recordings, with the C kernels and with the torch ops side by
side (``model.cpu_kernels: native`` / ``torch``, which give the same numbers).

The data are demo CASTELLA-like queries in 300-s recordings, packed and loaded as a training stage
loads them (in memory, batch ``train.batch_size`` of the demo preset). A step is the training
loop's: fetch a batch, forward (the encoder pass of the positive and the negative query counted
apart as ``encode``), criterion (the Hungarian matching counted apart as ``matching``), backward,
gradient clip + AdamW. ``validate`` is the evaluation of one validation batch
(``train.eval_batch_size`` queries: forward + post-processing + the official metrics), per query.
Medians over the timed steps after a warm-up. Each system runs in its own subprocess, one at a
time; in it the native and the torch model (same seed, same batches) take turns step by step, so
that the machine's slow and fast spells fall on both columns alike.

    python bench/demo_step.py [--steps 8] [--systems baseline slot1 slot2 slot3]

Prints a table per system, the torch/native ratio of the step, and ends with ONE JSON line:
{"baseline": {"native": {"step": s, "<phase>": s, ...}, "torch": {...}, "torch_over_native": r}, ...}
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("data", "encode", "forward_rest", "matching", "criterion_rest", "backward", "optimizer")
FRAMES = 300


def packed_split(root: Path) -> Path:
    """Demo CASTELLA-like training queries in 300-s recordings, packed."""
    from amr.config.schema import DataConfig
    from amr.data.demo import DemoSizes, make_demo_dataset
    from amr.data.pack import pack_split

    sizes = DemoSizes(clotho_train_queries=4, clotho_val_queries=4, castella_train_queries=192,  # 12 batches of 16, repeated as --steps needs
                      castella_val_queries=64, castella_test_queries=4, evaluation_queries=4,
                      castella_min_duration=FRAMES, castella_max_duration=FRAMES, event_types=12)
    manifest = make_demo_dataset(root / "demo", seed=0, sizes=sizes)
    out = {}
    for split in ("train", "val"):
        info = manifest["splits"][f"castella/{split}"]
        out[split] = root / f"{split}.h5"
        pack_split(root / "demo" / info["annotations"], root / "demo" / info["audio_dir"],
                   root / "demo" / info["text_dir"], out[split], DataConfig())
    return out


class Timer:
    """Accumulates the seconds spent in wrapped callables, per phase."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, phase: str, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
        return timed


KERNELS = ("native", "torch")


def measure(system: str, steps: int, data: dict) -> dict:
    """Both kernel paths of one system in one process, their steps alternating (the order
    swapped every step): a slow spell of the machine hits both columns alike."""
    import dataclasses

    import torch
    from torch.utils.data import DataLoader

    from amr.config.params import Params
    from amr.data.dataset import MomentDataset, collate_moments, eval_loader
    from amr.engine.cpu_memory import keep_freed_memory
    from amr.engine.loop import build_optimizer, weighted_total
    from amr.engine.predict import ground_truth_records, run_inference
    from amr.evaluation.metrics import evaluate_predictions
    from amr.losses import build_criterion
    from amr.model import build_model
    from amr.model.detector import cpu_kernels_in_use

    root = Path(__file__).resolve().parents[1]
    params = Params.load(root / "params.yaml", preset="demo")
    train_cfg = params.train
    torch.set_num_threads(train_cfg.threads or torch.get_num_threads())
    keep_freed_memory()
    base_cfg = params.system(system)
    train_set = MomentDataset(data["train"], base_cfg.data, train=True, seed=0, in_memory=True,
                              saliency_windows=base_cfg.loss.saliency_windows,
                              saliency_pairs=base_cfg.loss.saliency_pairs)

    def runner(kernels: str):
        """The model of these kernels and its training step."""
        cfg = dataclasses.replace(base_cfg, backbone=dataclasses.replace(base_cfg.backbone, cpu_kernels=kernels))
        torch.manual_seed(0)
        model, criterion = build_model(cfg), build_criterion(cfg)
        optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], 1e-3, 1e-4,
                                    torch.device("cpu"))
        loader = DataLoader(train_set, batch_size=train_cfg.batch_size, shuffle=True, collate_fn=collate_moments,
                            generator=torch.Generator().manual_seed(0))
        timer = Timer()
        model.encode = timer.wrap("encode", model.encode)
        criterion.matcher = timer.wrap("matching", criterion.matcher)

        def endless():  # any --steps: the loader's epochs one after another
            while True:
                yield from loader

        batches = endless()

        def step() -> dict:
            timer.seconds = {}
            start = time.perf_counter()
            batch = next(batches)
            data_s = time.perf_counter() - start
            t = time.perf_counter()
            out = model(batch)
            forward_s = time.perf_counter() - t
            t = time.perf_counter()
            loss = weighted_total(criterion(out, batch), criterion.weight_dict)
            criterion_s = time.perf_counter() - t
            t = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            backward_s = time.perf_counter() - t
            t = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            optimizer_s = time.perf_counter() - t
            encode, matching = timer.seconds.get("encode", 0.0), timer.seconds.get("matching", 0.0)
            return {"data": data_s, "encode": encode, "forward_rest": forward_s - encode, "matching": matching,
                    "criterion_rest": criterion_s - matching, "backward": backward_s, "optimizer": optimizer_s,
                    "step": time.perf_counter() - start}

        model.train()
        return model, cfg, step

    runners = {kernels: runner(kernels) for kernels in KERNELS}
    records: dict[str, list] = {kernels: [] for kernels in KERNELS}
    for _, _, step in runners.values():
        step()  # warm-up: allocations, optimiser state, the C kernels' first load
    for i in range(steps):
        for kernels in (KERNELS if i % 2 == 0 else KERNELS[::-1]):
            records[kernels].append(runners[kernels][2]())

    val_set = MomentDataset(data["val"], base_cfg.data, train=False)
    val_loader = eval_loader(val_set, train_cfg.eval_batch_size)
    gt = ground_truth_records(val_set)
    results = {}
    for kernels, (model, cfg, _) in runners.items():
        result = {k: round(statistics.median(r[k] for r in records[kernels]), 4) for k in (*PHASES, "step")}
        model.eval()
        start = time.perf_counter()
        predictions, _ = run_inference(model, val_loader, cfg)
        evaluate_predictions(predictions, gt)
        result["validate_per_query"] = round((time.perf_counter() - start) / len(val_set), 5)
        result["kernels"] = cpu_kernels_in_use(model)
        result["threads"] = torch.get_num_threads()
        result["batch"] = train_cfg.batch_size
        results[kernels] = result
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps after one warm-up step")
    parser.add_argument("--systems", nargs="+", default=["baseline", "slot1", "slot2", "slot3"])
    parser.add_argument("--child", metavar="SYSTEM", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data = json.loads(args.data)
        print(json.dumps(measure(args.child, args.steps, {k: Path(v) for k, v in data.items()})))
        return 0

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = {k: str(v) for k, v in packed_split(Path(tmp)).items()}
        for system in args.systems:
            proc = subprocess.run([sys.executable, __file__, "--child", system, "--steps", str(args.steps),
                                   "--data", json.dumps(data)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            results[system] = json.loads(proc.stdout.strip().splitlines()[-1])
            native, torch_ = results[system]["native"], results[system]["torch"]
            if native["kernels"] != "native":
                print(f"{system}: the C kernels did not build here; both columns are the torch ops", file=sys.stderr)
            results[system]["torch_over_native"] = round(torch_["step"] / native["step"], 3)
            print(f"\n{system} (batch {native['batch']}, {FRAMES} frames, {native['threads']} threads): "
                  "seconds per step")
            print(f"  {'phase':<16}{'native':>9}{'torch':>9}")
            for phase in (*PHASES, "step"):
                print(f"  {phase:<16}{native[phase]:9.4f}{torch_[phase]:9.4f}")
            print(f"  {'validate/query':<16}{native['validate_per_query']:9.5f}{torch_['validate_per_query']:9.5f}")
            print(f"  torch / native: {results[system]['torch_over_native']:.2f}x per step")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
