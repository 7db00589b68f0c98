"""Training throughput (samples/s) per system and inference throughput (queries/s) on CPU.

Small synthetic data (the demo generator + pack), report-width models (d = 256), a few
training steps per system after one warm-up step. Prints a table, then ONE JSON line.

    python bench/train_throughput.py [--systems baseline,slot1,slot2,slot3] [--steps 4]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="baseline,slot1,slot2,slot3")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per system")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from amr.config.params import Params
    from amr.config.schema import DataConfig
    from amr.data.dataset import MomentDataset, collate_moments, eval_loader
    from amr.data.demo import DemoSizes, make_demo_dataset
    from amr.data.pack import pack_split
    from amr.engine.loop import weighted_total
    from amr.engine.predict import run_inference
    from amr.losses import build_criterion
    from amr.model import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    params = Params.load(Path(__file__).resolve().parents[1] / "params.yaml", preset="paper")
    systems = {name: params.system(name) for name in params.trained_systems()}
    names = [n for n in args.systems.split(",") if n]
    unknown = [n for n in names if n not in systems]
    if unknown:
        print(f"unknown system(s) {unknown}; known: {sorted(systems)}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = DemoSizes(castella_train_queries=args.batch_size * 2, castella_val_queries=64,
                          castella_test_queries=4, clotho_train_queries=4, clotho_val_queries=4,
                          evaluation_queries=4)
        manifest = make_demo_dataset(tmp / "demo", seed=args.seed, sizes=sizes)
        packed = {}
        for split in ("train", "val"):
            info = manifest["splits"][f"castella/{split}"]
            packed[split] = tmp / f"{split}.h5"
            pack_split(tmp / "demo" / info["annotations"], tmp / "demo" / info["audio_dir"],
                       tmp / "demo" / info["text_dir"], packed[split], DataConfig())

        results = {}
        for name in names:
            cfg = systems[name]
            train_set = MomentDataset(packed["train"], cfg.data, train=True, in_memory=True)
            loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                collate_fn=collate_moments, drop_last=True)
            batches = [b for _, b in zip(range(args.steps + 1), _cycle(loader))]
            model, criterion = build_model(cfg), build_criterion(cfg)
            params = [p for m in (model, criterion) for p in m.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
            model.train()
            t0 = None
            for i, batch in enumerate(batches):
                if i == 1:  # the first step pays for allocation and lazy initialisation
                    t0 = time.perf_counter()
                loss = weighted_total(criterion(model(batch), batch), criterion.weight_dict)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 0.1)
                opt.step()
            train_sps = args.steps * args.batch_size / (time.perf_counter() - t0)

            val_set = MomentDataset(packed["val"], cfg.data, train=False, in_memory=True)
            loader = eval_loader(val_set, 64)
            run_inference(model, loader, cfg)  # warm-up
            t0 = time.perf_counter()
            records, _ = run_inference(model, loader, cfg)
            infer_qps = len(records) / (time.perf_counter() - t0)
            frames = float(train_set.audio_offsets[-1]) / max(len(train_set.audio_offsets) - 1, 1)
            results[name] = {
                "train_samples_per_s": round(train_sps, 2),
                "inference_queries_per_s": round(infer_qps, 2),
                "trainable_parameters": sum(p.numel() for p in params),
                "mean_frames": round(frames, 1),
            }
            print(f"{name:10s} train {train_sps:8.2f} samples/s   inference {infer_qps:8.2f} "
                  f"queries/s   params {results[name]['trainable_parameters']:,}", flush=True)

    print(json.dumps({"benchmark": "train_throughput", "device": "cpu", "threads": args.threads,
                      "batch_size": args.batch_size, "steps": args.steps, "systems": results}))
    return 0


def _cycle(loader):
    while True:
        yield from loader


if __name__ == "__main__":
    sys.exit(main())
