"""CPU runtime settings of training: glibc keeps freed memory, AdamW is the fused one."""
from __future__ import annotations

import platform

import torch

from amr.engine.cpu_memory import keep_freed_memory
from amr.engine.loop import build_optimizer


def test_keep_freed_memory_takes_effect_on_glibc():
    is_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is is_glibc
    # allocations still work afterwards, large ones included
    x = torch.ones(40 << 20, dtype=torch.uint8)
    assert int(x.sum()) == 40 << 20


def test_cpu_optimiser_is_fused_adamw_with_the_plain_update():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(5))]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fused = build_optimizer(params, 1e-2, 1e-4, torch.device("cpu"))
    plain = torch.optim.AdamW(reference, lr=1e-2, weight_decay=1e-4)
    assert fused.defaults["fused"] is True
    for _ in range(3):
        for ps, opt in ((params, fused), (reference, plain)):
            opt.zero_grad()
            sum((p**2).sum() for p in ps).backward()
            opt.step()
    for a, b in zip(params, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
