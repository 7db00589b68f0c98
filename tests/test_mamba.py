"""Selective scan, Mamba block and bidirectional Mamba encoder."""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from amr.config.params import Params
from amr.config.schema import BackboneConfig, MambaConfig
from amr.kernels import native
from amr.kernels import selective_scan as scan_module
from amr.kernels.selective_scan import ChunkedSelectiveScan, selective_scan
from amr.model.mamba import (
    BidirectionalMambaEncoder,
    Mamba,
    causal_depthwise_conv,
    conv_silu,
    reverse_valid_frames_index,
)

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# Step-by-step references (float64), written from the recurrence, independent of the code tested
# ---------------------------------------------------------------------------------------------
def naive_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba-ssm layout: u, delta, z (b, d, L); A (d, n); B, C (b, n, L) → (b, d, L)."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        decay = torch.exp(delta[:, :, t, None] * A)
        h = decay * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y


def reference_mamba(m: Mamba, x: torch.Tensor) -> torch.Tensor:
    """mamba-ssm's Mamba forward (slow path), spelled out on m's parameters."""
    length = x.shape[1]
    xz = x @ m.in_proj.weight.T
    u, z = xz.chunk(2, dim=-1)
    u = F.conv1d(u.transpose(1, 2), m.conv1d.weight, m.conv1d.bias, padding=m.d_conv - 1, groups=m.d_inner)
    u = F.silu(u[..., :length])
    x_dbl = u.transpose(1, 2) @ m.x_proj.weight.T
    dt, B, C = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
    y = naive_selective_scan(
        u,
        (dt @ m.dt_proj.weight.T).transpose(1, 2),
        -torch.exp(m.A_log),
        B.transpose(1, 2),
        C.transpose(1, 2),
        m.D,
        z.transpose(1, 2),
        delta_bias=m.dt_proj.bias,
        delta_softplus=True,
    )
    return y.transpose(1, 2) @ m.out_proj.weight.T


def scan_inputs(batch, d_inner, d_state, length, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        u=r(batch, d_inner, length),
        delta=r(batch, d_inner, length) * 0.5 - 1.0,
        A=-torch.rand(d_inner, d_state, generator=g, dtype=dtype) * 3 - 0.1,
        B=r(batch, d_state, length),
        C=r(batch, d_state, length),
        D=r(d_inner),
        z=r(batch, d_inner, length),
        delta_bias=r(d_inner) * 0.3,
    )


def assert_same_outputs_and_gradients(ours, ref, inputs: dict) -> None:
    """Outputs and the gradients of every input agree (rtol 1e-5) for a random output gradient."""
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-10)
    grad_out = torch.randn_like(ref)
    names = list(inputs)
    ours_grads = torch.autograd.grad(ours, [inputs[k] for k in names], grad_out)
    ref_grads = torch.autograd.grad(ref, [inputs[k] for k in names], grad_out)
    for name, a, b in zip(names, ours_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10, msg=lambda m: f"grad of {name}: {m}")


# ---------------------------------------------------------------------------------------------
# Selective scan
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,chunk", [(1, 8), (13, 1), (13, 4), (16, 8), (19, 8), (7, 32)])
def test_scan_matches_naive_outputs_and_all_gradients(length, chunk):
    inputs = {k: v.requires_grad_() for k, v in scan_inputs(2, 5, 3, length).items()}
    ours = selective_scan(**inputs, delta_softplus=True, chunk=chunk)
    ref = naive_selective_scan(**inputs, delta_softplus=True)
    assert_same_outputs_and_gradients(ours, ref, inputs)


def _needs_compiler():
    if native.native_available():
        return
    if not any(shutil.which(c) for c in (os.environ.get("CC", "cc"), "gcc", "clang")):
        pytest.skip("no C compiler: the fused scan cannot be built here (eager path is used)")
    raise AssertionError(f"building the fused scan kernel failed: {native.build_error()}")


@pytest.mark.parametrize(
    "variant,batch,d_inner,length",
    [("mamba", 2, 5, 10), ("plain", 2, 5, 10), ("mamba", 3, 21, 11), ("mamba", 1, 32, 3)],
)
def test_fused_scan_matches_naive_outputs_and_all_gradients(variant, batch, d_inner, length):
    # The kernel works in blocks of 16 channels: 5 and 21 channels exercise a partial last block,
    # 32 two full ones; chunks of 4 over 10 or 11 steps a short last chunk. "mamba": D, z gate,
    # Δ bias and softplus inside the kernel, as the Mamba block calls it; "plain": none of them.
    _needs_compiler()
    inputs = {k: v.requires_grad_() for k, v in scan_inputs(batch, d_inner, 3, length, seed=9).items()}
    softplus = variant == "mamba"
    if variant == "plain":
        inputs = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
        with torch.no_grad():
            inputs["delta"] = inputs["delta"].exp().requires_grad_()  # positive Δ without softplus
    ours = selective_scan(**inputs, delta_softplus=softplus, chunk=4, fused=True)
    assert scan_module.fused_scan_available(), "building the fused kernel failed"
    ref = naive_selective_scan(**inputs, delta_softplus=softplus)
    assert_same_outputs_and_gradients(ours, ref, inputs)


def test_fused_scan_float32_matches_eager():
    _needs_compiler()
    inputs64 = scan_inputs(3, 40, 16, 37, seed=5)
    inputs = {k: v.float().requires_grad_() for k, v in inputs64.items()}
    eager = {k: v.float().requires_grad_() for k, v in inputs64.items()}
    ours = selective_scan(**inputs, delta_softplus=True, chunk=8, fused=True)
    ref = selective_scan(**eager, delta_softplus=True, chunk=8, fused=False)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    grad_out = torch.randn_like(ref)
    ours_grads = torch.autograd.grad(ours, list(inputs.values()), grad_out)
    ref_grads = torch.autograd.grad(ref, list(eager.values()), grad_out)
    for name, a, b in zip(inputs, ours_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"grad of {name}: {m}")


def test_fused_scan_falls_back_to_eager_when_building_fails(monkeypatch):
    def broken_build():
        raise native.NativeBuildError("no C compiler found")

    monkeypatch.setattr(native, "_load", broken_build)
    monkeypatch.setitem(native._STATE, "error", None)
    monkeypatch.setitem(scan_module._FUSED, "disabled", None)
    inputs = {k: v.requires_grad_() for k, v in scan_inputs(1, 3, 2, 6, seed=2).items()}
    with pytest.warns(RuntimeWarning, match="eager chunked scan"):
        ours = selective_scan(**inputs, delta_softplus=True, chunk=4, fused=True)
    ref = naive_selective_scan(**inputs, delta_softplus=True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-10)
    assert not scan_module.fused_scan_available()  # monkeypatch restores the flags afterwards


def test_fused_scan_backward_falls_back_to_eager_gradients(monkeypatch):
    _needs_compiler()

    def broken_backward(*args, **kwargs):
        raise RuntimeError("backward kernel failed")

    monkeypatch.setattr(native, "scan_backward", broken_backward)
    monkeypatch.setitem(scan_module._FUSED, "disabled", None)
    inputs = {k: v.requires_grad_() for k, v in scan_inputs(1, 3, 2, 6, seed=4).items()}
    ours = selective_scan(**inputs, delta_softplus=True, chunk=4, fused=True)  # kernel forward
    ref = naive_selective_scan(**inputs, delta_softplus=True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-10)
    grad_out = torch.randn_like(ref)
    names = list(inputs)
    with pytest.warns(RuntimeWarning, match="eager chunked scan"):
        ours_grads = torch.autograd.grad(ours, [inputs[k] for k in names], grad_out)
    ref_grads = torch.autograd.grad(ref, [inputs[k] for k in names], grad_out)
    for name, a, b in zip(names, ours_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10, msg=lambda m: f"grad of {name}: {m}")


def test_fused_path_follows_the_knob():
    u = torch.empty(10, 2, 8)
    assert not scan_module.use_fused_scan(u, native_cpu_kernels=False)
    assert scan_module.use_fused_scan(u, native_cpu_kernels=True) == scan_module.fused_scan_available()
    demo = Params.load(Path(__file__).resolve().parents[1] / "params.yaml", preset="demo")
    # both presets: the C kernels where the compiler builds them, torch ops elsewhere
    assert demo.system("slot3").backbone.cpu_kernels == "auto" == BackboneConfig().cpu_kernels


def test_scan_core_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    L, b, d, n = 6, 2, 3, 2
    args = (
        torch.randn(L, b, d, generator=g, dtype=torch.float64),
        torch.rand(L, b, d, generator=g, dtype=torch.float64) + 0.05,
        -torch.rand(d, n, generator=g, dtype=torch.float64) - 0.1,
        torch.randn(L, b, n, generator=g, dtype=torch.float64),
        torch.randn(L, b, n, generator=g, dtype=torch.float64),
    )
    args = tuple(a.requires_grad_() for a in args)
    assert torch.autograd.gradcheck(lambda *a: ChunkedSelectiveScan.apply(*a, 4), args)


def test_scan_result_does_not_depend_on_chunk_length():
    inputs = scan_inputs(3, 4, 5, 23, seed=3, dtype=torch.float32)
    outs = [selective_scan(**inputs, delta_softplus=True, chunk=c) for c in (1, 5, 8, 23, 64)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-6)


def test_scan_float32_close_to_float64_reference():
    inputs = scan_inputs(2, 6, 4, 30, seed=4)
    ref = naive_selective_scan(**inputs, delta_softplus=True)
    ours = selective_scan(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-5)


def test_scan_matches_mamba_ssm_reference_when_installed():
    interface = pytest.importorskip("mamba_ssm.ops.selective_scan_interface")
    inputs = scan_inputs(2, 5, 3, 19, seed=5)
    ref = interface.selective_scan_ref(**inputs, delta_softplus=True)
    torch.testing.assert_close(selective_scan(**inputs, delta_softplus=True), ref, rtol=1e-5, atol=1e-10)


# mamba-ssm's fp32 tolerances (its tests/ops/test_selective_scan.py): the CUDA kernel scans in
# float32 with a different summation order than ours
CUDA_PARITY_RTOL, CUDA_PARITY_ATOL = 6e-4, 2e-3


def cuda_scan_pairs(batch=2, d_inner=512, d_state=16, length=301, seed=7) -> dict:
    """Our scan and mamba-ssm's ``selective_scan_fn`` on CUDA, float32, at the report's sizes
    (d_inner = 2 x 256, 300 frames + the global token): {"y" or "grad_<input>": (ours, theirs)}."""
    from amr.model.mamba import mamba_ssm_scan

    selective_scan_fn = mamba_ssm_scan()
    inputs = {k: v.float().cuda().requires_grad_() for k, v in
              scan_inputs(batch, d_inner, d_state, length, seed=seed, dtype=torch.float64).items()}
    ours = selective_scan(**inputs, delta_softplus=True)
    ref = selective_scan_fn(**inputs, delta_softplus=True)
    grad_out = torch.randn_like(ref)
    names = list(inputs)
    ours_grads = torch.autograd.grad(ours, [inputs[k] for k in names], grad_out)
    ref_grads = torch.autograd.grad(ref, [inputs[k] for k in names], grad_out)
    pairs = {"y": (ours, ref)} | {f"grad_{n}": (a, b) for n, a, b in zip(names, ours_grads, ref_grads)}
    return pairs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scan_matches_mamba_ssm_cuda_kernel():
    """Forward and every input's gradient agree with mamba-ssm's CUDA kernel (float32).
    Run by bench/gpu_check.sh; skipped without CUDA or mamba-ssm."""
    from amr.model.mamba import mamba_ssm_scan

    if mamba_ssm_scan() is None:
        pytest.skip("mamba-ssm's CUDA kernel is not importable")
    for name, (ours, ref) in cuda_scan_pairs().items():
        torch.testing.assert_close(ours, ref, rtol=CUDA_PARITY_RTOL, atol=CUDA_PARITY_ATOL,
                                   msg=lambda m: f"{name}: {m}")


def test_a_broken_mamba_ssm_install_falls_back_with_one_warning(tmp_path, monkeypatch):
    """A mamba-ssm that raises at import (ImportError, or the OSError of a kernel built for
    another torch) is reported once and our scan is used: training does not crash."""
    import sys

    from amr.model import mamba as mamba_module

    for error in ("ImportError('libc10_cuda.so: cannot open shared object file')",
                  "OSError('selective_scan_cuda.so: undefined symbol: _ZN3c105ErrorC2E')"):
        stub = tmp_path / error[:7] / "mamba_ssm"
        (stub / "ops").mkdir(parents=True)
        (stub / "__init__.py").write_text("")
        (stub / "ops" / "__init__.py").write_text("")
        (stub / "ops" / "selective_scan_interface.py").write_text(f"raise {error}\n")
        monkeypatch.syspath_prepend(str(stub.parent))
        for name in [m for m in sys.modules if m.startswith("mamba_ssm")]:
            monkeypatch.delitem(sys.modules, name)
        mamba_module.mamba_ssm_scan.cache_clear()
        with pytest.warns(RuntimeWarning, match="mamba-ssm is installed but does not import") as caught:
            assert mamba_module.mamba_ssm_scan() is None
            assert mamba_module.mamba_ssm_scan() is None  # remembered: one warning
        assert len(caught) == 1 and "\n" not in str(caught[0].message)
        assert error.split("(")[0] in str(caught[0].message)
    mamba_module.mamba_ssm_scan.cache_clear()
    # and the encoder still runs, on our scan, which the run records
    encoder = BidirectionalMambaEncoder(16, MambaConfig(enabled=True, d_state=4))
    encoder(torch.randn(2, 9, 16), torch.ones(2, 9, dtype=torch.bool)).sum().backward()
    assert mamba_module.scan_paths(encoder) == [mamba_module.SCAN_TORCH]


def test_scan_rejects_bad_shapes_and_chunk():
    inputs = scan_inputs(1, 2, 2, 4)
    with pytest.raises(ValueError, match="chunk"):
        selective_scan(**inputs, chunk=0)
    with pytest.raises(ValueError, match=r"\(B, N, L\)"):
        selective_scan(**{**inputs, "B": inputs["B"][0]})


# ---------------------------------------------------------------------------------------------
# Mamba block
# ---------------------------------------------------------------------------------------------
def mamba_ssm_state_dict(d_model, d_state=16, d_conv=4, expand=2):
    """The keys and shapes of mamba_ssm.modules.mamba_simple.Mamba, written out by hand."""
    d_inner, dt_rank = expand * d_model, math.ceil(d_model / 16)
    shapes = {
        "A_log": (d_inner, d_state),
        "D": (d_inner,),
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv),
        "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }
    g = torch.Generator().manual_seed(7)
    return {k: torch.randn(*s, generator=g) * 0.2 for k, s in shapes.items()}


def test_mamba_ssm_state_dict_loads_strictly_and_drives_the_output():
    state = mamba_ssm_state_dict(48, d_state=8, d_conv=3)
    m = Mamba(48, d_state=8, d_conv=3)
    m.load_state_dict(state, strict=True)
    assert set(m.state_dict()) == set(state)
    x = torch.randn(2, 11, 48)
    other = Mamba(48, d_state=8, d_conv=3)
    assert not torch.allclose(other(x), m(x))
    other.load_state_dict(state, strict=True)
    torch.testing.assert_close(other(x), m(x), rtol=0, atol=0)


def test_mamba_forward_matches_mamba_ssm_math_float64():
    torch.manual_seed(0)
    m = Mamba(32, d_state=4, d_conv=4, expand=2, chunk=3).double()
    m.load_state_dict({k: v.double() for k, v in mamba_ssm_state_dict(32, 4).items()})
    x = torch.randn(2, 10, 32, dtype=torch.float64, requires_grad=True)
    ours, ref = m(x), reference_mamba(m, x)
    torch.testing.assert_close(ours, ref, rtol=1e-7, atol=1e-9)
    grad_out = torch.randn_like(ref)
    params = [x, *m.parameters()]
    for a, b in zip(torch.autograd.grad(ours, params, grad_out), torch.autograd.grad(ref, params, grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("length", [1, 3, 9])
def test_causal_depthwise_conv_matches_conv1d(length):
    g = torch.Generator().manual_seed(length)
    u = torch.randn(length, 2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    ref = F.conv1d(u.permute(1, 2, 0), weight.unsqueeze(1), bias, padding=3, groups=6)[..., :length]
    torch.testing.assert_close(causal_depthwise_conv(u, weight, bias), ref.permute(2, 0, 1))
    assert torch.autograd.gradcheck(causal_depthwise_conv, (u, weight, bias))


def test_mamba_is_causal():
    torch.manual_seed(0)
    m = Mamba(16, d_state=4)
    x = torch.randn(1, 12, 16)
    changed = x.clone()
    changed[:, 7] += 1.0
    y, y_changed = m(x), m(changed)
    torch.testing.assert_close(y[:, :7], y_changed[:, :7], rtol=0, atol=0)
    assert not torch.allclose(y[:, 7:], y_changed[:, 7:])


def test_mamba_parametrisation_and_initialisation():
    torch.manual_seed(0)
    m = Mamba(256, d_state=16, d_conv=4, expand=2)
    assert (m.d_inner, m.dt_rank) == (512, 16)
    assert sum(p.numel() for p in m.parameters()) == 437_760
    assert m.in_proj.bias is None and m.x_proj.bias is None and m.out_proj.bias is None
    assert m.conv1d.groups == 512 and m.conv1d.padding == (3,)
    expected_A = torch.arange(1, 17, dtype=torch.float32).repeat(512, 1)
    torch.testing.assert_close(m.A_log.exp(), expected_A)
    torch.testing.assert_close(m.D, torch.ones(512))
    assert m.dt_proj.weight.abs().max() <= 16**-0.5
    assert m.dt_proj.weight.std() > 0.5 * 16**-0.5 / math.sqrt(3)  # uniform, not collapsed
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    log_dt = dt.log()  # log-uniform: mean of the log near the middle of [log 1e-3, log 0.1]
    assert abs(log_dt.mean().item() - (math.log(1e-3) + math.log(0.1)) / 2) < 0.3
    for p in (m.A_log, m.D, m.dt_proj.weight, m.dt_proj.bias):
        assert getattr(p, "_no_reinit", False)
    for p in (m.in_proj.weight, m.x_proj.weight, m.out_proj.weight, m.conv1d.weight):
        assert not getattr(p, "_no_reinit", False)


def test_mamba_reset_parameters_restores_the_special_init():
    m = Mamba(32, d_state=4)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(0.123)
    m.reset_parameters()
    torch.testing.assert_close(m.A_log.exp(), torch.arange(1, 5.0).repeat(64, 1))
    torch.testing.assert_close(m.D, torch.ones(64))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert not torch.all(m.in_proj.weight == 0.123)


# ---------------------------------------------------------------------------------------------
# Bidirectional encoder
# ---------------------------------------------------------------------------------------------
def small_encoder(depth=1, d_model=32, seed=0):
    torch.manual_seed(seed)
    return BidirectionalMambaEncoder(d_model, MambaConfig(enabled=True, depth=depth, d_state=4, chunk=3))


def prefix_mask(lengths, length):
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


def test_encoder_parameter_count_matches_the_report_block():
    encoder = BidirectionalMambaEncoder(256, MambaConfig(depth=1, d_state=16, d_conv=4, expand=2))
    assert sum(p.numel() for p in encoder.parameters()) == 876_032
    block = encoder.layers[0]
    assert block.forward_mamba is not block.reverse_mamba
    assert sum(p.numel() for p in block.norm.parameters()) == 512


def test_encoder_depth_and_shape():
    encoder = small_encoder(depth=2)
    assert len(encoder.layers) == 2
    x = torch.randn(3, 9, 32)
    assert encoder(x, prefix_mask([9, 5, 1], 9)).shape == (3, 9, 32)


def test_reverse_index_flips_only_the_valid_prefix():
    index = reverse_valid_frames_index(prefix_mask([4, 2, 0], 5))
    assert index.tolist() == [[3, 2, 1, 0, 4], [1, 0, 2, 3, 4], [0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="contiguous valid prefix"):
        reverse_valid_frames_index(torch.tensor([[True, False, True]]))


def test_encoder_output_does_not_depend_on_batch_companions():
    encoder = small_encoder(depth=2)
    clip = torch.randn(1, 6, 32)
    alone = encoder(clip, prefix_mask([6], 6))
    batch = torch.randn(3, 10, 32)
    batch[1, :6] = clip[0]
    batch[1, 6:] = 0.0
    batched = encoder(batch, prefix_mask([10, 6, 8], 10))
    torch.testing.assert_close(batched[1, :6], alone[0], rtol=0, atol=1e-5)


def test_encoder_ignores_padding_content():
    encoder = small_encoder()
    mask = prefix_mask([7, 4], 7)
    x = torch.randn(2, 7, 32)
    junk = x.clone()
    junk[1, 4:] = 1e3 * torch.randn(3, 32)
    out, out_junk = encoder(x, mask), encoder(junk, mask)
    torch.testing.assert_close(out_junk[mask], out[mask], rtol=0, atol=1e-6)


def test_encoder_reverse_branch_sees_the_future_within_the_valid_frames():
    encoder = small_encoder()
    mask = prefix_mask([8], 8)
    x = torch.randn(1, 8, 32)
    changed = x.clone()
    changed[:, 5] += 1.0
    out, out_changed = encoder(x, mask), encoder(changed, mask)
    assert not torch.allclose(out[:, :5], out_changed[:, :5])  # earlier frames see frame 5


def test_encoder_is_deterministic_and_gradients_reach_inputs():
    encoder = small_encoder()
    mask = prefix_mask([9, 6], 9)
    x = torch.randn(2, 9, 32, requires_grad=True)
    first, second = encoder(x, mask), encoder(x, mask)
    assert torch.equal(first, second)
    (g1,) = torch.autograd.grad(first.sum(), x)
    (g2,) = torch.autograd.grad(second.sum(), x)
    assert torch.equal(g1, g2)
    assert torch.all(g1[1, 6:] == 0)  # padded input frames are zeroed before the block
    assert g1[:, :6].abs().sum() > 0


def test_encoder_rejects_bad_mask():
    encoder = small_encoder()
    x = torch.randn(2, 5, 32)
    with pytest.raises(ValueError, match="mask must be bool"):
        encoder(x, torch.ones(2, 5))
    with pytest.raises(ValueError, match="contiguous valid prefix"):
        encoder(x, torch.tensor([[True, False, True, True, True]] * 2))


@pytest.mark.parametrize("length,dtype", [(1, torch.float64), (3, torch.float64), (13, torch.float64),
                                          (13, torch.float32)])
def test_fused_conv_silu_matches_eager_outputs_and_gradients(length, dtype):
    _needs_compiler()
    g = torch.Generator().manual_seed(length)
    u = torch.randn(length, 3, 20, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(20, 4, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(20, generator=g, dtype=dtype, requires_grad=True)
    ours = conv_silu(u, weight, bias, fused=True)
    ref = F.silu(causal_depthwise_conv(u, weight, bias))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, ref, **tol)
    grad_out = torch.randn(ref.shape, generator=g, dtype=dtype)
    for name, a, b in zip(("u", "weight", "bias"), torch.autograd.grad(ours, (u, weight, bias), grad_out),
                          torch.autograd.grad(ref, (u, weight, bias), grad_out)):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"grad of {name}: {m}")
