"""The CUDA half of bench/gpu_check.sh: selective-scan parity and training-step timings.

1. Our selective scan against mamba-ssm's ``selective_scan_fn`` on CUDA, float32, at the
   report's sizes (d_inner 512, d_state 16, 301 steps): the largest error of the output and of
   every input's gradient, relative to the largest reference value.
2. One training step (forward + criterion + backward + clip + AdamW) of every system at the
   report's widths (the ``paper`` preset), batch 32, 300 frames, 32 tokens: median milliseconds
   over the timed steps and the peak GPU memory; systems with Mamba run twice, with mamba-ssm's
   kernel and with ours (torch ops on the GPU).

    python bench/gpu_check.py [--steps 10]

Prints a line per measurement, then ONE JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import synthetic_batch  # noqa: E402  (bench/ is not a package)


def scan_parity(seed: int = 7) -> dict:
    import torch

    from amr.kernels.selective_scan import selective_scan
    from amr.model.mamba import mamba_ssm_scan

    selective_scan_fn = mamba_ssm_scan()
    if selective_scan_fn is None:
        return {"available": False}
    g = torch.Generator().manual_seed(seed)
    batch, d_inner, d_state, length = 2, 512, 16, 301
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    inputs = dict(u=r(batch, d_inner, length), delta=r(batch, d_inner, length) * 0.5 - 1.0,
                  A=-torch.rand(d_inner, d_state, generator=g) * 3 - 0.1, B=r(batch, d_state, length),
                  C=r(batch, d_state, length), D=r(d_inner), z=r(batch, d_inner, length),
                  delta_bias=r(d_inner) * 0.3)
    inputs = {k: v.cuda().requires_grad_() for k, v in inputs.items()}
    ours = selective_scan(**inputs, delta_softplus=True)
    ref = selective_scan_fn(**inputs, delta_softplus=True)
    grad_out = torch.randn(ref.shape, generator=g).cuda()
    names = list(inputs)
    ours_grads = torch.autograd.grad(ours, [inputs[k] for k in names], grad_out)
    ref_grads = torch.autograd.grad(ref, [inputs[k] for k in names], grad_out)
    errors = {}
    for name, a, b in [("y", ours, ref)] + list(zip([f"grad_{n}" for n in names], ours_grads, ref_grads)):
        a, b = a.detach(), b.detach()
        errors[name] = float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
    return {"available": True, "max_relative_error": errors}


def time_step(system: str, use_mamba_ssm: bool, steps: int, device: str = "cuda") -> dict:
    import torch

    from amr.config.params import Params
    from amr.engine.loop import build_optimizer, weighted_total
    from amr.losses import build_criterion
    from amr.model import build_model
    from amr.model import mamba as mamba_module

    params = Params.load(Path(__file__).resolve().parents[1] / "params.yaml", preset="paper")
    cfg = params.system(system)
    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    saved = mamba_module.mamba_ssm_scan
    if not use_mamba_ssm:
        mamba_module.mamba_ssm_scan = lambda: None  # our scan, in torch ops on the GPU
    try:
        torch.manual_seed(0)
        model, criterion = build_model(cfg).to(device), build_criterion(cfg).to(device)
        optimiser = build_optimizer(list(model.parameters()), 1e-4, 1e-4, device)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in synthetic_batch(cfg).items()}
        model.train()

        def step() -> None:
            loss = weighted_total(criterion(model(batch), batch), criterion.weight_dict)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimiser.step()

        for _ in range(3):  # warm-up: allocator, cuBLAS/cuDNN plans, kernels
            step()
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        paths = mamba_module.scan_paths(model)
    finally:
        mamba_module.mamba_ssm_scan = saved
    return {"ms_per_step": round(1000 * statistics.median(times), 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
            "scan": paths}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps after 3 warm-up steps")
    parser.add_argument("--systems", nargs="+", default=["baseline", "slot1", "slot2", "slot3"])
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch", file=sys.stderr)
        return 1
    from amr.model.mamba import mamba_ssm_scan

    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "mamba_ssm_kernel": mamba_ssm_scan() is not None}
    result["scan_parity"] = parity = scan_parity()
    if parity["available"]:
        worst = max(parity["max_relative_error"].items(), key=lambda kv: kv[1])
        print(f"scan parity vs mamba-ssm (fp32): largest relative error {worst[1]:.2e} ({worst[0]})")
    else:
        print("scan parity: mamba-ssm's kernel is not importable; skipped")
    steps = {}
    for system in args.systems:
        has_mamba = uses_mamba(system)
        for use_kernel in ([True, False] if has_mamba and result["mamba_ssm_kernel"] else [False]):
            label = f"{system}/{'mamba-ssm' if use_kernel else 'amr'}" if has_mamba else system
            steps[label] = measured = time_step(system, use_kernel, args.steps)
            print(f"{label:<20} {measured['ms_per_step']:8.1f} ms/step  peak {measured['peak_gpu_mib']:8.1f} MiB  "
                  f"scan {measured['scan'] or '-'}  (batch 32, 300 frames, paper widths)")
    result["train_step"] = steps
    print(json.dumps(result))
    return 0


def uses_mamba(system: str) -> bool:
    from amr.config.params import Params

    params = Params.load(Path(__file__).resolve().parents[1] / "params.yaml", preset="paper")
    return params.system(system).mamba.enabled


if __name__ == "__main__":
    sys.exit(main())
