"""Forward + backward time and peak memory of the bidirectional Mamba block on CPU.

Compares ``amr.model.mamba.BidirectionalMambaEncoder`` (depth 1) with the same block built from
mambapy's ``MambaBlock`` (parallel scan, two blocks: one on the sequence, one on its reverse).
``ours`` is the report's configuration (the C scan kernel), ``ours_eager`` the same block
with ``model.cpu_kernels: torch``. Each implementation runs in its own subprocess, so its peak RSS is its own: reported both
absolute and minus the process's RSS after imports, model and input creation.

    .venv/bin/python bench/mamba_scan.py            # (32, 300, 256), 2 threads
    .venv/bin/python bench/mamba_scan.py --quick    # small shapes, a few seconds

Prints a table, then ONE JSON line (ours_s, ours_eager_s, mambapy_s, ratio = mambapy / ours,
compiled_vs_eager, ours_peak_mb, mambapy_peak_mb, …).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

IMPLEMENTATIONS = ("ours", "ours_eager", "mambapy")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _build(impl: str, d_model: int, chunk: int):
    import torch
    from torch import nn

    if impl in ("ours", "ours_eager"):
        from amr.config.schema import MambaConfig
        from amr.model.mamba import BidirectionalMambaEncoder

        # ours: the report's configuration (C scan kernel); ours_eager: model.cpu_kernels torch
        cfg = MambaConfig(enabled=True, chunk=chunk)
        encoder = BidirectionalMambaEncoder(d_model, cfg, native_cpu_kernels=impl == "ours")
        return lambda x, mask: encoder(x, mask)

    from mambapy.mamba import MambaBlock
    from mambapy.mamba import MambaConfig as MambapyConfig

    cfg = MambapyConfig(d_model=d_model, n_layers=1, d_state=16, d_conv=4, expand_factor=2, pscan=True)
    forward_block, reverse_block, norm = MambaBlock(cfg), MambaBlock(cfg), nn.LayerNorm(d_model)

    def bidirectional(x, mask):  # full-length sequences: a plain flip is the per-sequence reversal
        backward_in_time = torch.flip(reverse_block(torch.flip(x, [1])), [1])
        return norm(x + forward_block(x) + backward_in_time)

    return bidirectional


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    block = _build(args.worker, args.d_model, args.chunk)
    x = torch.randn(args.batch, args.length, args.d_model, requires_grad=True)
    mask = torch.ones(args.batch, args.length, dtype=torch.bool)
    grad_out = torch.randn(args.batch, args.length, args.d_model)
    baseline_mb = _maxrss_mb()

    def step() -> tuple[float, float, float]:
        x.grad = None
        cpu0, t0 = time.process_time(), time.perf_counter()
        y = block(x, mask)
        t1 = time.perf_counter()
        y.backward(grad_out)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t0, time.process_time() - cpu0

    first = step()  # warm-up; includes building the C scan kernel unless cached on disk
    runs = [step() for _ in range(args.repeats)]
    peak_mb = _maxrss_mb()
    print(
        json.dumps(
            {
                "impl": args.worker,
                "forward_s": statistics.median(r[0] for r in runs),
                "total_s": statistics.median(r[1] for r in runs),
                "first_s": first[1],
                "runs_s": [round(r[1], 4) for r in runs],
                # CPU seconds summed over threads: less sensitive than wall time to other load.
                "cpu_s": statistics.median(r[2] for r in runs),
                "peak_mb": peak_mb - baseline_mb,
                "peak_abs_mb": peak_mb,
            }
        )
    )


def measure(impl: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", impl,
        "--batch", str(args.batch), "--length", str(args.length), "--d-model", str(args.d_model),
        "--threads", str(args.threads), "--repeats", str(args.repeats), "--chunk", str(args.chunk),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{impl} benchmark failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small shapes (8, 100, 128)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=8, help="our scan's chunk length")
    parser.add_argument("--only", choices=IMPLEMENTATIONS, help="measure one implementation")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.length, args.d_model = 8, 100, 128
    if args.worker:
        worker(args)
        return

    results = {impl: measure(impl, args) for impl in ([args.only] if args.only else IMPLEMENTATIONS)}
    shape = (args.batch, args.length, args.d_model)
    print(f"bidirectional Mamba block, forward + backward, input {shape}, {args.threads} threads, "
          f"median of {args.repeats} after 1 warm-up")  # fmt: skip
    print(f"{'implementation':<16}{'fwd s':>9}{'fwd+bwd s':>11}{'cpu s':>9}{'peak MB':>10}{'abs MB':>9}"
          f"{'1st call s':>12}   runs")  # fmt: skip
    for impl, r in results.items():
        print(f"{impl:<16}{r['forward_s']:>9.3f}{r['total_s']:>11.3f}{r['cpu_s']:>9.3f}{r['peak_mb']:>10.0f}"
              f"{r['peak_abs_mb']:>9.0f}{r['first_s']:>12.2f}   {r['runs_s']}")  # fmt: skip
    summary = {"shape": list(shape), "threads": args.threads, "chunk": args.chunk}
    for impl, r in results.items():
        summary.update({
            f"{impl}_s": round(r["total_s"], 4),
            f"{impl}_best_s": min(r["runs_s"]),
            f"{impl}_forward_s": round(r["forward_s"], 4),
            f"{impl}_cpu_s": round(r["cpu_s"], 4),
            f"{impl}_first_call_s": round(r["first_s"], 2),
            f"{impl}_peak_mb": round(r["peak_mb"], 1),
            f"{impl}_peak_abs_mb": round(r["peak_abs_mb"], 1),
        })  # fmt: skip
    if "ours_eager" in results and "ours" in results:
        summary["compiled_vs_eager"] = round(results["ours_eager"]["total_s"] / results["ours"]["total_s"], 2)
    if "mambapy" in results and "ours" in results:
        summary["ratio"] = round(results["mambapy"]["total_s"] / results["ours"]["total_s"], 2)
        print(f"ours is {summary['ratio']:.2f}x faster than mambapy")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
