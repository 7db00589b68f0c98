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
- fused (``FusedSelectiveScan``): the same arithmetic as plain expressions compiled by
  ``torch.compile`` (C++ on CPU), with softplus(dt + bias), the D skip and the silu(z) gate
  inside the chunk kernels, so no full-size elementwise intermediates are made. Compiling takes
  10-20 s per process (a second batch size recompiles once, with a dynamic batch dimension),
  which long training runs earn back and a pipeline of short demo runs does not; the knob
  ``mamba.compile_cpu_scan`` (params.yaml) chooses, and only scans large enough to pay off use
  it (``use_fused_scan``).
  If compiling fails (e.g. no C++ compiler), a warning is issued and the eager path takes over.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


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
# Fused path: the same chunk arithmetic as plain tensor expressions, compiled by torch.compile
# (TorchInductor writes one C++ loop nest per fusion group, so the per-step work of a chunk stays
# in registers/cache instead of streaming (chunk, B, D, N) buffers through memory ~20 times).
# ---------------------------------------------------------------------------------------------
def _forward_chunk(dt, u, z, A, B, C, D, bias, h, softplus: bool, gated: bool):
    """One chunk of the whole mixer arithmetic after the projections, as mamba-ssm's kernel does it:
    Δ = softplus(dt + bias); the recurrence; y = (C·h + D u) ⊙ silu(z).

    dt, u, z (T, B, D); B, C (T, B, N); A (D, N); D, bias (D,); h (B, D, N) → y (T, B, D), last h.
    """
    ys = []
    for i in range(dt.shape[0]):
        delta = dt[i] + bias
        if softplus:
            delta = F.softplus(delta)
        h = torch.exp(delta.unsqueeze(-1) * A) * h + (delta * u[i]).unsqueeze(-1) * B[i].unsqueeze(-2)
        y = (h * C[i].unsqueeze(-2)).sum(-1) + D * u[i]
        ys.append(y * F.silu(z[i]) if gated else y)
    return torch.stack(ys), h


def _backward_chunk(dt, u, z, A, B, C, D, bias, h0, grad_out, carry, partial_A, partial_D, partial_bias,
                    softplus: bool, gated: bool):
    """Back-propagate through one chunk given dLoss/dh flowing in from the next chunk (``carry``).

    Returns d dt, du, dz, the running per-batch-element sums of dA (B, D, N), dD and d bias
    (B, D), then dB, dC and the carry for the previous chunk, exp(Δ_0 A) ⊙ dh_0. The parameter
    gradients are summed over the batch once, after the last chunk: a per-step sum over the
    batch would split the compiled kernel into extra loops with full-size intermediates.
    """
    steps = dt.shape[0]
    deltas, decays, states = [], [], []
    h = h0
    for i in range(steps):
        delta = dt[i] + bias
        deltas.append(F.softplus(delta) if softplus else delta)
        decays.append(torch.exp(deltas[i].unsqueeze(-1) * A))
        h = decays[i] * h + (deltas[i] * u[i]).unsqueeze(-1) * B[i].unsqueeze(-2)
        states.append(h)
    grad_h = carry
    grad_dt, grad_u, grad_z, grad_B, grad_C = ([None] * steps for _ in range(5))
    for i in reversed(range(steps)):
        if gated:
            gate_sigmoid = torch.sigmoid(z[i])
            pre_gate = (states[i] * C[i].unsqueeze(-2)).sum(-1) + D * u[i]
            grad_y = grad_out[i] * z[i] * gate_sigmoid
            # d silu(z)/dz = σ(z) (1 + z (1 - σ(z)))
            grad_z[i] = grad_out[i] * pre_gate * gate_sigmoid * (1 + z[i] * (1 - gate_sigmoid))
        else:
            grad_y = grad_out[i]
        partial_D = partial_D + grad_y * u[i]
        grad_h = grad_h + grad_y.unsqueeze(-1) * C[i].unsqueeze(-2)
        grad_C[i] = (states[i] * grad_y.unsqueeze(-1)).sum(-2)
        grad_delta_u = (grad_h * B[i].unsqueeze(-2)).sum(-1)
        grad_B[i] = (grad_h * (deltas[i] * u[i]).unsqueeze(-1)).sum(-2)
        grad_log_decay = grad_h * decays[i] * (states[i - 1] if i > 0 else h0)
        # Δ enters through the decay and through the input term Δu; softplus' = sigmoid
        grad_delta = (grad_log_decay * A).sum(-1) + grad_delta_u * u[i]
        grad_dt[i] = grad_delta * torch.sigmoid(dt[i] + bias) if softplus else grad_delta
        partial_bias = partial_bias + grad_dt[i]
        grad_u[i] = grad_delta_u * deltas[i] + grad_y * D
        partial_A = partial_A + grad_log_decay * deltas[i].unsqueeze(-1)
        grad_h = decays[i] * grad_h
    return (
        torch.stack(grad_dt),
        torch.stack(grad_u),
        torch.stack(grad_z) if gated else None,
        partial_A,
        partial_D,
        partial_bias,
        torch.stack(grad_B),
        torch.stack(grad_C),
        grad_h,
    )


_FUSED = {"kernels": None, "disabled": None}

# Below this many state updates (L·B·D·N) per call, compiling (seconds, once per shape family)
# cannot pay off, so the default picks the eager path: small models and tests never compile.
FUSED_MIN_WORK = 1 << 20


def fused_scan_available() -> bool:
    """False once compiling the fused chunk kernels has failed in this process."""
    return _FUSED["disabled"] is None


def use_fused_scan(u: torch.Tensor, d_state: int, compile_cpu_scan: bool) -> bool:
    """Fused when asked for, on CPU, for a scan large enough to earn its compile."""
    if not compile_cpu_scan or u.device.type != "cpu" or not fused_scan_available():
        return False
    return u.numel() * d_state >= FUSED_MIN_WORK


def _fused_kernels():
    """Compiled (forward chunk, backward chunk)."""
    if _FUSED["kernels"] is None:
        _FUSED["kernels"] = (torch.compile(_forward_chunk), torch.compile(_backward_chunk))
    return _FUSED["kernels"]


def _disable_fused(exc: Exception) -> None:
    _FUSED["disabled"] = exc
    warnings.warn(
        f"selective scan: compiling the fused CPU kernels failed ({type(exc).__name__}: {exc}); "
        "using the eager chunked scan (same results, slower). Install a C++ compiler, or set "
        "mamba.compile_cpu_scan: false in params.yaml to silence this.",
        RuntimeWarning,
        stacklevel=3,
    )


def _chunk_views(tensors, start: int, chunk: int):
    """Steps start … start+chunk-1 of each tensor as fresh (small) tensors; a shorter last chunk
    is zero-padded to ``chunk`` steps, so all chunks share one compiled kernel. Padded steps have
    Δ = 0 (decay 1) and no input: they carry the state through unchanged and get zero gradient.
    Copies rather than views: views at varying storage offsets would make dynamo recompile."""
    views = [t[start : start + chunk] for t in tensors]
    missing = chunk - views[0].shape[0]
    if missing:
        return [torch.cat([v, v.new_zeros(missing, *v.shape[1:])]) for v in views]
    return [v.clone() for v in views]


def _forward_fused(u, dt, z, A, B, C, D, bias, chunk: int, softplus: bool, gated: bool):
    L, batch, d_inner = u.shape
    n_chunks = math.ceil(L / chunk)
    forward_chunk = _fused_kernels()[0]
    entry = u.new_empty(n_chunks, batch, d_inner, A.shape[1])
    entry[0].zero_()
    y = u.new_empty(L, batch, d_inner)
    h = entry[0]
    for k in range(n_chunks):
        t0 = k * chunk
        dt_k, u_k, z_k, B_k, C_k = _chunk_views((dt, u, z, B, C), t0, chunk)
        y_k, h = forward_chunk(dt_k, u_k, z_k, A, B_k, C_k, D, bias, h, softplus, gated)
        y[t0 : t0 + chunk] = y_k[: min(chunk, L - t0)]
        if k + 1 < n_chunks:
            entry[k + 1].copy_(h)
    return y, entry


def _backward_fused(u, dt, z, A, B, C, D, bias, entry, grad_out, chunk: int, softplus: bool, gated: bool):
    """Gradients of u, dt, z (None unless gated), A, B, C, D and bias."""
    L = u.shape[0]
    n_chunks = entry.shape[0]
    backward_chunk = _fused_kernels()[1]
    grad_dt, grad_u = torch.empty_like(u), torch.empty_like(u)
    grad_z = torch.empty_like(u) if gated else None
    grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
    partial_A = torch.zeros_like(entry[0])  # per batch element; summed over the batch at the end
    partial_D, partial_bias = torch.zeros_like(u[0]), torch.zeros_like(u[0])
    carry = torch.zeros_like(entry[0])
    for k in reversed(range(n_chunks)):
        t0 = k * chunk
        n = min(chunk, L - t0)
        dt_k, u_k, z_k, B_k, C_k, grad_k = _chunk_views((dt, u, z, B, C, grad_out), t0, chunk)
        g_dt, g_u, g_z, partial_A, partial_D, partial_bias, g_B, g_C, carry = backward_chunk(
            dt_k, u_k, z_k, A, B_k, C_k, D, bias, entry[k].clone(), grad_k, carry,
            partial_A, partial_D, partial_bias, softplus, gated,
        )  # fmt: skip
        grad_dt[t0 : t0 + n] = g_dt[:n]
        grad_u[t0 : t0 + n] = g_u[:n]
        if gated:
            grad_z[t0 : t0 + n] = g_z[:n]
        grad_B[t0 : t0 + n] = g_B[:n]
        grad_C[t0 : t0 + n] = g_C[:n]
    return grad_u, grad_dt, grad_z, partial_A.sum(0), grad_B, grad_C, partial_D.sum(0), partial_bias.sum(0)


class FusedSelectiveScan(torch.autograd.Function):
    """The compiled CPU path: Δ = softplus(dt + bias), the scan, y = (C·h + D u) ⊙ silu(z), all
    inside the chunk kernels, so none of the mixer's full-size elementwise intermediates exist.

    Inputs time-major and contiguous, one floating dtype: u, dt, z (L, B, D); A (D, N); B, C
    (L, B, N); D, bias (D,). ``gated=False`` ignores z (pass any tensor of u's shape).
    """

    @staticmethod
    def forward(ctx, u, dt, z, A, B, C, D, bias, chunk: int, softplus: bool, gated: bool):
        y, entry = _forward_fused(u, dt, z, A, B, C, D, bias, chunk, softplus, gated)
        ctx.save_for_backward(u, dt, z, A, B, C, D, bias, entry)
        ctx.chunk, ctx.softplus, ctx.gated = chunk, softplus, gated
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        u, dt, z, A, B, C, D, bias, entry = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        try:
            grads = _backward_fused(
                u, dt, z, A, B, C, D, bias, entry, grad_out, ctx.chunk, ctx.softplus, ctx.gated
            )
        except Exception as exc:  # noqa: BLE001 - a compiler failure: same gradients, eagerly
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
    False = eager chunked scan (``use_fused_scan`` tells when fused pays off). Both paths give
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
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, same math
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
