"""Selective scan (the S6 recurrence of Mamba) for CPU: chunked, memory-bounded, exact.

The recurrence, per batch element b, channel d and state n (mamba-ssm's ``selective_scan_ref``):

    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t          h: (D, N), h_{-1} = 0
    y_t = C_t · h_t  (+ D u_t, then ⊙ silu(z_t))

Letting autograd record this loop stores several (B, L, D, N) tensors (gigabytes for a batch of
32 × 300 frames × 512 channels × 16 states). ``ChunkedSelectiveScan`` instead keeps only the state
entering each chunk of ``chunk`` time steps; its hand-written backward walks the chunks in reverse,
recomputes the states of one chunk from its entry state, and back-propagates through that chunk
alone. Peak extra memory is therefore ~4 chunk buffers of (chunk, B, D, N) plus L/chunk states.

Everything here is time-major, (L, B, ·): one time step is then a contiguous (B, D, N) block and a
chunk is a contiguous slab, so every per-step and per-chunk operation runs on dense memory.

Two implementations of the per-chunk work give the same results:
- eager: in-place buffers, one fused multiply-add per step, batched mat-vecs for the contractions;
- fused (``FusedSelectiveScan``): a C kernel (``selective_scan_cpu.c``, built at first use by
  :mod:`amr.kernels.native` in a few seconds, cached on disk) with softplus(dt + bias), the
  D skip and the silu(z) gate inside, 16 channels of one batch element per vector block, so no
  full-size elementwise intermediates are made and each step's states stay in cache. The knob
  ``model.cpu_kernels`` (params.yaml: ``native``, or ``auto`` where the compiler builds it) turns
  it on for every CPU scan (``use_fused_scan``). If building fails (e.g. no C compiler), a warning
  is issued and the eager path takes over.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from amr.kernels import native


def _chunk_states(
    delta: torch.Tensor,  # (L, B, D)
    delta_u: torch.Tensor,  # (L, B, D)
    A: torch.Tensor,  # (D, N)
    B: torch.Tensor,  # (L, B, N)
    h0: torch.Tensor,  # (B, D, N) state before the chunk
    t0: int,
    decay: torch.Tensor,  # out (n, B, D, N): exp(Δ_t A)
    states: torch.Tensor,  # out (n, B, D, N): h_t
) -> None:
    """Fill ``decay`` and ``states`` for the n steps t0 … t0+n-1 of one chunk."""
    n = states.shape[0]
    torch.mul(delta[t0 : t0 + n].unsqueeze(-1), A, out=decay)
    torch.exp(decay, out=decay)
    # The input term Δ_t u_t B_t goes into ``states`` first; the step loop then adds the
    # decayed previous state in place, one fused multiply-add per step.
    torch.mul(delta_u[t0 : t0 + n].unsqueeze(-1), B[t0 : t0 + n].unsqueeze(-2), out=states)
    prev = h0
    for i in range(n):
        states[i].addcmul_(decay[i], prev)
        prev = states[i]


def _forward_eager(u, delta, A, B, C, chunk: int):
    """Chunked forward with in-place buffers. Returns y (L, B, D) and the chunk entry states."""
    L, batch, d_inner = u.shape
    d_state = A.shape[1]
    n_chunks = math.ceil(L / chunk)
    delta_u = delta * u
    # entry[k] = state before chunk k: all the backward needs to recompute chunk k.
    entry = u.new_empty(n_chunks, batch, d_inner, d_state)
    entry[0].zero_()
    decay = u.new_empty(chunk, batch, d_inner, d_state)
    states = torch.empty_like(decay)
    y = u.new_empty(L, batch, d_inner)
    for k in range(n_chunks):
        t0 = k * chunk
        n = min(chunk, L - t0)
        _chunk_states(delta, delta_u, A, B, entry[k], t0, decay[:n], states[:n])
        # y_t = h_t C_t as a batched matrix-vector product: (D, N) @ (N, 1) per (t, b).
        torch.matmul(states[:n], C[t0 : t0 + n].unsqueeze(-1), out=y[t0 : t0 + n].unsqueeze(-1))
        if k + 1 < n_chunks:
            entry[k + 1].copy_(states[n - 1])
    return y, entry


def _backward_eager(u, delta, A, B, C, entry, grad_y, chunk: int):
    """Reverse walk over the chunks, recomputing each one's states from its entry state.

    Returns the gradients of Δu (not of u), Δ (through exp(ΔA) only), A, B and C.
    """
    L, batch, d_inner = u.shape
    d_state = A.shape[1]
    n_chunks = entry.shape[0]
    delta_u = delta * u

    decay = u.new_empty(chunk, batch, d_inner, d_state)
    states = torch.empty_like(decay)
    grad_h = torch.empty_like(decay)  # dLoss/dh_t, total (through y_t and h_{t+1})
    carry = u.new_empty(batch, d_inner, d_state)  # exp(Δ A) dLoss/dh at the next chunk's start
    grad_C = torch.empty_like(C)
    grad_B = torch.empty_like(B)
    grad_delta_u = torch.empty_like(u)
    grad_delta = torch.empty_like(u)
    grad_A = torch.zeros_like(A)
    # (D, L*B) view of Δ for the per-channel contraction giving grad_A.
    delta_by_channel = delta.view(L * batch, d_inner).t()

    for k in reversed(range(n_chunks)):
        t0 = k * chunk
        n = min(chunk, L - t0)
        steps = slice(t0, t0 + n)
        dec, h, gh = decay[:n], states[:n], grad_h[:n]
        _chunk_states(delta, delta_u, A, B, entry[k], t0, dec, h)

        # y_t = h_t C_t  →  dC_t = h_tᵀ gy_t ; the direct part of dh_t is gy_t ⊗ C_t.
        torch.matmul(h.transpose(-1, -2), grad_y[steps].unsqueeze(-1), out=grad_C[steps].unsqueeze(-1))
        torch.mul(grad_y[steps].unsqueeze(-1), C[steps].unsqueeze(-2), out=gh)
        # h_{t+1} = exp(Δ_{t+1} A) h_t + …  →  dh_t += exp(Δ_{t+1} A) dh_{t+1}.
        if k + 1 < n_chunks:
            gh[n - 1].add_(carry)
        for i in range(n - 2, -1, -1):
            gh[i].addcmul_(dec[i + 1], gh[i + 1])

        # Input term Δ_t u_t B_t: d(Δu)_t = dh_t B_t, dB_t = dh_tᵀ (Δu)_t.
        torch.matmul(gh, B[steps].unsqueeze(-1), out=grad_delta_u[steps].unsqueeze(-1))
        torch.matmul(gh.transpose(-1, -2), delta_u[steps].unsqueeze(-1), out=grad_B[steps].unsqueeze(-1))

        # Decay term: d(Δ_t A) = dh_t ⊙ exp(Δ_t A) ⊙ h_{t-1}, computed in place of ``dec``.
        dec.mul_(gh)
        if k > 0:
            carry.copy_(dec[0])
        dec[0].mul_(entry[k])
        if n > 1:
            dec[1:].mul_(h[: n - 1])
        grad_log_decay = dec.view(n * batch, d_inner, d_state)
        # dΔ_t[d] = Σ_n d(ΔA)[d, n] A[d, n];  dA[d, n] = Σ_{t,b} d(ΔA)[d, n] Δ_t[d].
        # Both are per-channel contractions: batched over d on strided views of d(ΔA).
        per_channel = grad_log_decay.permute(1, 0, 2)  # (D, n·B, N)
        grad_delta_steps = torch.bmm(per_channel, A.unsqueeze(-1)).squeeze(-1)  # (D, n·B)
        grad_delta[steps].view(n * batch, d_inner).copy_(grad_delta_steps.t())
        delta_steps = delta_by_channel[:, t0 * batch : (t0 + n) * batch].unsqueeze(-1)  # (D, n·B, 1)
        grad_A.add_(torch.bmm(per_channel.transpose(1, 2), delta_steps).squeeze(-1))

    return grad_delta_u, grad_delta, grad_A, grad_B, grad_C


# ---------------------------------------------------------------------------------------------
# Fused path: the C kernel of ``selective_scan_cpu.c`` (built at first use, see native.py).
# ---------------------------------------------------------------------------------------------
_FUSED = {"disabled": None}



def fused_scan_available() -> bool:
    """False once building or running the compiled kernel has failed in this process."""
    if _FUSED["disabled"] is not None:
        return False
    if not native.native_available():
        _disable_fused(native.build_error())
        return False
    return True


def use_fused_scan(u: torch.Tensor, native_cpu_kernels: bool) -> bool:
    """Fused when asked for, on CPU: faster than the eager scan at every size (a mixer of
    (L, B, D) = (20, 2, 32) takes 0.7 ms fused against 1.7 ms eager, forward and backward)."""
    if not native_cpu_kernels or u.device.type != "cpu":
        return False
    return fused_scan_available()


def _disable_fused(exc: Exception | None) -> None:
    _FUSED["disabled"] = exc
    warnings.warn(
        f"selective scan: the compiled CPU kernel is unavailable ({type(exc).__name__}: {exc}); "
        "using the eager chunked scan (same results, slower). Install a C compiler (gcc), or set "
        "model.cpu_kernels: torch in params.yaml to silence this.",
        RuntimeWarning,
        stacklevel=3,
    )


class FusedSelectiveScan(torch.autograd.Function):
    """The compiled CPU path: Δ = softplus(dt + bias), the scan, y = (C·h + D u) ⊙ silu(z), all
    inside the C kernel, so none of the mixer's full-size elementwise intermediates exist and the
    states are never stored beyond one entry state per chunk.

    Inputs time-major and contiguous, one floating dtype (float32 or float64): u, dt, z (L, B, D);
    A (D, N); B, C (L, B, N); D, bias (D,). ``gated=False`` ignores z (pass any tensor of u's shape).
    """

    @staticmethod
    def forward(ctx, u, dt, z, A, B, C, D, bias, chunk: int, softplus: bool, gated: bool):
        y, entry = native.scan_forward(u, dt, z, A, B, C, D, bias, chunk, softplus, gated)
        ctx.save_for_backward(u, dt, z, A, B, C, D, bias, entry)
        ctx.chunk, ctx.softplus, ctx.gated = chunk, softplus, gated
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        u, dt, z, A, B, C, D, bias, entry = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        try:
            grads = native.scan_backward(
                u, dt, z, A, B, C, D, bias, entry, grad_out, ctx.chunk, ctx.softplus, ctx.gated
            )
        except Exception as exc:  # noqa: BLE001 - a kernel failure: same gradients, eagerly
            _disable_fused(exc)
            grads = _eager_gradients(u, dt, z, A, B, C, D, bias, grad_out, ctx.chunk, ctx.softplus, ctx.gated)
        grad_u, grad_dt, grad_z, grad_A, grad_B, grad_C, grad_D, grad_bias = grads
        return grad_u, grad_dt, grad_z, grad_A, grad_B, grad_C, grad_D, grad_bias, None, None, None


def _eager_composition(u, dt, z, A, B, C, D, bias, chunk: int, softplus: bool, gated: bool):
    delta = dt + bias
    if softplus:
        delta = F.softplus(delta)
    y = ChunkedSelectiveScan.apply(u, delta, A, B, C, chunk) + u * D
    return y * F.silu(z) if gated else y


def _eager_gradients(u, dt, z, A, B, C, D, bias, grad_out, chunk, softplus, gated):
    inputs = [t.detach().requires_grad_() for t in (u, dt, z, A, B, C, D, bias)]
    with torch.enable_grad():
        y = _eager_composition(*inputs, chunk, softplus, gated)
        grads = torch.autograd.grad(y, inputs, grad_out, allow_unused=True)
    grad_u, grad_dt, grad_z, grad_A, grad_B, grad_C, grad_D, grad_bias = grads
    return grad_u, grad_dt, grad_z if gated else None, grad_A, grad_B, grad_C, grad_D, grad_bias


class ChunkedSelectiveScan(torch.autograd.Function):
    """The eager path: y_t = C_t · h_t for the recurrence above, time-major, Δ already positive
    (post-softplus). Inputs: u, delta (L, B, D); A (D, N); B, C (L, B, N); all contiguous, one
    floating dtype; ``chunk`` steps per recomputed chunk. Output: y (L, B, D).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk: int):
        y, entry = _forward_eager(u, delta, A, B, C, chunk)
        ctx.save_for_backward(u, delta, A, B, C, entry)
        ctx.chunk = chunk
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        u, delta, A, B, C, entry = ctx.saved_tensors
        grad_delta_u, grad_delta, grad_A, grad_B, grad_C = _backward_eager(
            u, delta, A, B, C, entry, grad_y.contiguous(), ctx.chunk
        )
        # Δu enters as a product: d u = d(Δu) Δ, and dΔ gains d(Δu) u.
        return grad_delta_u * delta, grad_delta + grad_delta_u * u, grad_A, grad_B, grad_C, None


def selective_scan_time_major(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    chunk: int = 8,
    fused: bool = False,
) -> torch.Tensor:
    """The selective scan on time-major tensors: u, delta, z (L, B, D); B, C (L, B, N) → (L, B, D).

    Same arithmetic as mamba-ssm's ``selective_scan_fn``; computed in float32 (float64 stays
    float64), returned in u's dtype. ``fused``: True = compiled kernels (``FusedSelectiveScan``),
    False = eager chunked scan (``use_fused_scan`` tells which). Both paths give
    the same results.
    """
    if chunk < 1:
        raise ValueError(f"selective scan: chunk must be >= 1, got {chunk}")
    dtype_in = u.dtype
    work = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(work).contiguous() for t in (u, delta, A, B, C))
    D = u.new_zeros(u.shape[-1]) if D is None else D.to(work).contiguous()
    bias = u.new_zeros(u.shape[-1]) if delta_bias is None else delta_bias.to(work).contiguous()
    gated = z is not None
    z = z.to(work).contiguous() if gated else u  # ungated: z is never read
    if fused and fused_scan_available():
        try:
            y = FusedSelectiveScan.apply(u, delta, z, A, B, C, D, bias, chunk, delta_softplus, gated)
            return y.to(dtype_in)
        except Exception as exc:  # noqa: BLE001 - any kernel failure: fall back, same math
            _disable_fused(exc)
    return _eager_composition(u, delta, z, A, B, C, D, bias, chunk, delta_softplus, gated).to(dtype_in)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    chunk: int = 8,
    fused: bool = False,
) -> torch.Tensor:
    """Drop-in for mamba-ssm's ``selective_scan_fn`` (real-valued, B/C per time step).

    u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L); D, delta_bias: (D,) → (B, D, L).
    """
    if u.dim() != 3 or B.dim() != 3 or C.dim() != 3 or A.dim() != 2:
        raise ValueError(
            "selective_scan: expected u, delta (B, D, L), A (D, N), B, C (B, N, L); got "
            f"u {tuple(u.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    to_time_major = (2, 0, 1)
    y = selective_scan_time_major(
        u.permute(to_time_major),
        delta.permute(to_time_major),
        A,
        B.permute(to_time_major),
        C.permute(to_time_major),
        D=D,
        z=None if z is None else z.permute(to_time_major),
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
        chunk=chunk,
        fused=fused,
    )
    return y.permute(1, 2, 0)
