"""Mamba block (Gu & Dao) and the bidirectional Mamba audio encoder of the report (§2.2).

``Mamba`` reproduces mamba-ssm's ``mamba_ssm.modules.mamba_simple.Mamba`` exactly: the same
sub-modules, parameter names, shapes, initialisation and forward arithmetic, so a state dict
trained on GPU with mamba-ssm loads with ``strict=True`` and gives the same outputs here.
On CUDA with mamba-ssm installed the fused ``selective_scan_fn`` kernel runs the scan; everywhere
else the chunked scan of :mod:`amr.kernels.selective_scan` does.

Parameters with a dedicated initialisation (``A_log``, ``D``, ``dt_proj.weight``,
``dt_proj.bias``) carry the attribute ``_no_reinit = True``: a model-wide re-initialisation (e.g.
Xavier on every matrix) must skip them, or the state-space dynamics lose their designed range of
time scales. ``A_log`` and ``D`` also carry mamba-ssm's ``_no_weight_decay = True``.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from amr.config.schema import MambaConfig
from amr.kernels import native
from amr.kernels.selective_scan import (
    fused_scan_available,
    selective_scan_time_major,
    use_fused_scan,
)

# how a scan ran, as recorded in system_info.json
SCAN_MAMBA_SSM = "mamba-ssm CUDA kernel"
SCAN_NATIVE = "amr C kernel (CPU)"
SCAN_TORCH = "amr torch ops"


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """The scan runs in float32 as mamba-ssm's kernel does; a float64 model stays float64."""
    return t if t.dtype == torch.float64 else t.float()


@functools.cache
def mamba_ssm_scan():
    """mamba-ssm's ``selective_scan_fn`` (the optional GPU extra), or None.

    None when it is not installed, and also when it is installed but cannot be imported: a
    wheel built for another torch/CUDA raises ImportError or an OSError ("undefined symbol") at
    import. Then one warning says so, and our scan (same results) runs instead.
    """
    if importlib.util.find_spec("mamba_ssm") is None:
        return None
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        warnings.warn(f"mamba-ssm is installed but does not import ({type(exc).__name__}: {first_line}); "
                      "using amr's selective scan instead (same results, slower on GPU)",
                      RuntimeWarning, stacklevel=2)
        return None
    return selective_scan_fn


def scan_paths(model: nn.Module) -> list[str]:
    """How the Mamba scans of ``model`` have run so far (empty without Mamba)."""
    return sorted({path for m in model.modules() if isinstance(m, Mamba) for path in m.scan_paths})


class Mamba(nn.Module):
    """One causal Mamba mixer: (B, L, d_model) → (B, L, d_model).

    d_inner = expand · d_model; dt_rank = ceil(d_model / 16). ``chunk`` (speed against memory)
    and ``native_cpu_kernels`` (C kernels for the conv + silu and the scan of large CPU inputs)
    only choose how the CPU path runs; neither changes the result.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        chunk: int = 8,
        native_cpu_kernels: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        if min(d_model, d_state, d_conv, expand, chunk) < 1:
            raise ValueError(
                f"Mamba: d_model, d_state, d_conv, expand and chunk must all be >= 1, got "
                f"{d_model}, {d_state}, {d_conv}, {expand}, {chunk}"
            )
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.chunk = chunk
        self.native_cpu_kernels = native_cpu_kernels
        self.scan_paths: set[str] = set()  # how this mixer's scans ran (system_info.json)
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=True,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        for p in (self.A_log, self.D, self.dt_proj.weight, self.dt_proj.bias):
            p._no_reinit = True
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mamba-ssm's initialisation (PyTorch defaults for the plain layers)."""
        for layer in (self.in_proj, self.conv1d, self.x_proj, self.out_proj):
            layer.reset_parameters()
        dt_init_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        # Δ = softplus(bias) starts log-uniform in [dt_min, dt_max]: bias = softplus⁻¹(Δ).
        log_min, log_max = math.log(self.dt_min), math.log(self.dt_max)
        dt = torch.exp(torch.rand(self.d_inner) * (log_max - log_min) + log_min)
        dt = dt.clamp(min=self.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real: A = -(1, 2, …, d_state) in every channel, stored as log(-A).
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"Mamba: expected input (B, L, {self.d_model}), got {tuple(x.shape)}")
        if x.is_cuda and (scan := mamba_ssm_scan()) is not None:
            self.scan_paths.add(SCAN_MAMBA_SSM)
            return self._forward_mamba_ssm(x, scan)
        # Time-major (L, B, ·) from the input projection on: the scan works one contiguous time
        # step at a time, and no layout copies are needed between the projections and the scan.
        return self._forward_time_major(x.transpose(0, 1)).transpose(0, 1)

    def _forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (L, B, d_inner) each
        fused = use_fused_scan(u, self.native_cpu_kernels)
        self.scan_paths.add(SCAN_NATIVE if fused else SCAN_TORCH)
        u = conv_silu(u, self.conv1d.weight[:, 0], self.conv1d.bias, fused)
        dt, B, C = torch.split(self.x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        y = selective_scan_time_major(
            u,
            F.linear(dt, self.dt_proj.weight),  # its bias is added in the scan, as in mamba-ssm
            -torch.exp(_at_least_fp32(self.A_log)),
            B,
            C,
            D=_at_least_fp32(self.D),
            z=z,
            delta_bias=_at_least_fp32(self.dt_proj.bias),
            delta_softplus=True,
            chunk=self.chunk,
            fused=fused,
        )
        return self.out_proj(y)

    def _forward_mamba_ssm(self, x: torch.Tensor, selective_scan_fn) -> torch.Tensor:
        """mamba-ssm's own (non-fused-projection) path: its CUDA selective-scan kernel."""
        length = x.shape[1]
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L)
        u = F.silu(self.conv1d(u)[..., :length])
        x_dbl = self.x_proj(u.transpose(1, 2))
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        y = selective_scan_fn(
            u,
            F.linear(dt, self.dt_proj.weight).transpose(1, 2),
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2))


class _CausalDepthwiseConv(torch.autograd.Function):
    """out_t = bias + Σ_k weight[:, k] ⊙ u_{t-(K-1)+k}, zero before t = 0; u time-major (L, B, E).

    Equals Conv1d(E, E, K, groups=E, padding=K-1) truncated to the first L outputs, but works
    on the time-major layout directly and is a few shifted multiply-adds each way.
    """

    @staticmethod
    def forward(ctx, u, weight, bias):
        length, width = u.shape[0], weight.shape[1]
        out = torch.empty(u.shape, dtype=u.dtype, device=u.device)
        out.copy_(bias)
        for k in range(width):
            shift = width - 1 - k  # tap k reads ``shift`` steps into the past
            if shift < length:
                out[shift:].addcmul_(u[: length - shift], weight[:, k])
        ctx.save_for_backward(u, weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        u, weight = ctx.saved_tensors
        length, width = u.shape[0], weight.shape[1]
        grad_u = torch.zeros(u.shape, dtype=u.dtype, device=u.device)
        grad_weight = torch.zeros_like(weight)
        for k in range(width):
            shift = width - 1 - k
            if shift < length:
                grad_u[: length - shift].addcmul_(grad_out[shift:], weight[:, k])
                # Reduce over the leading (time, batch) dims of a product: no layout copies.
                grad_weight[:, k] = (grad_out[shift:] * u[: length - shift]).flatten(0, 1).sum(0)
        return grad_u, grad_weight, grad_out.sum(dim=(0, 1))


def causal_depthwise_conv(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Causal depthwise convolution over time: u (L, B, E), weight (E, K), bias (E) → (L, B, E)."""
    return _CausalDepthwiseConv.apply(u, weight, bias)


class _FusedConvSilu(torch.autograd.Function):
    """silu(causal_depthwise_conv(u, weight, bias)) in the C kernel, one pass each way; the
    pre-activation is recomputed in the backward instead of stored."""

    @staticmethod
    def forward(ctx, u, weight, bias):
        ctx.save_for_backward(u, weight, bias)
        return native.conv_silu_forward(u, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        u, weight, bias = ctx.saved_tensors
        return native.conv_silu_backward(u, weight, bias, grad_out.contiguous())


def conv_silu(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, fused: bool) -> torch.Tensor:
    """silu of the causal depthwise convolution, u (L, B, E) time-major; ``fused``: the C kernel
    (float32/float64, same results), else the eager ops."""
    if fused and u.dtype in (torch.float32, torch.float64) and fused_scan_available():
        return _FusedConvSilu.apply(u.contiguous(), weight.contiguous(), bias.contiguous())
    return F.silu(causal_depthwise_conv(u, weight, bias))


def reverse_valid_frames_index(mask: torch.Tensor) -> torch.Tensor:
    """Gather index (B, L) that reverses each sequence within its own valid prefix.

    Frame t < length maps to length-1-t; padded frames stay in place. The map is its own
    inverse, so the same index also puts the reverse scan's output back in time order.
    """
    lengths = mask.sum(dim=1, keepdim=True)  # (B, 1)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    if not torch.equal(mask, positions < lengths):
        raise ValueError(
            "BidirectionalMambaEncoder: mask must mark a contiguous valid prefix of each "
            "sequence (True frames first, then padding); pad recordings at the end"
        )
    return torch.where(mask, lengths - 1 - positions, positions)


class BidirectionalMambaBlock(nn.Module):
    """y = LayerNorm(x + fwd(x) + rev(x)); rev scans each sequence backwards over its valid frames."""

    def __init__(self, d_model: int, cfg: MambaConfig, native_cpu_kernels: bool = False):
        super().__init__()
        kwargs = dict(d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand, chunk=cfg.chunk,
                      native_cpu_kernels=native_cpu_kernels)
        self.forward_mamba = Mamba(d_model, **kwargs)
        self.reverse_mamba = Mamba(d_model, **kwargs)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, reverse_index: torch.Tensor) -> torch.Tensor:
        # Zero the padding so that the forward scan's trailing padding and the reverse scan's
        # trailing padding (after the per-sequence flip) both carry nothing.
        x = x * mask.unsqueeze(-1).to(x.dtype)
        gather_index = reverse_index.unsqueeze(-1).expand_as(x)
        reversed_x = torch.gather(x, 1, gather_index)
        backward_in_time = torch.gather(self.reverse_mamba(reversed_x), 1, gather_index)
        return self.norm(x + self.forward_mamba(x) + backward_in_time)


class BidirectionalMambaEncoder(nn.Module):
    """Stack of ``cfg.depth`` bidirectional Mamba blocks over the audio frames.

    forward(x (B, L, d_model), mask bool (B, L), True = valid frame) → (B, L, d_model).
    Padding must be at the end of each sequence. Valid frames never see padding or other batch
    members, so a recording's output does not depend on what it is batched with.
    """

    def __init__(self, d_model: int, cfg: MambaConfig, native_cpu_kernels: bool = False):
        super().__init__()
        if cfg.depth < 1:
            raise ValueError(f"BidirectionalMambaEncoder: mamba.depth must be >= 1, got {cfg.depth}")
        self.layers = nn.ModuleList(BidirectionalMambaBlock(d_model, cfg, native_cpu_kernels)
                                    for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(
                f"BidirectionalMambaEncoder: mask must be bool {tuple(x.shape[:2])}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        reverse_index = reverse_valid_frames_index(mask)
        for layer in self.layers:
            x = layer(x, mask, reverse_index)
        return x
