"""The compiled CPU kernels, built at first use and called via ctypes.

``selective_scan_cpu.c`` holds the Mamba mixer's kernels. The scan kernel does the mixer's
arithmetic after the projections (softplus(dt + bias), the recurrence, the D skip and the silu(z)
gate) and its exact backward, one block of 16 channels of one batch element at a time, so the
(B, L, D, N) state tensors never exist and each step's states stay in cache. A second pair of
kernels does the mixer's causal depthwise convolution and its silu in one pass each way.
``dropout_cpu.c`` draws a dropout mask from a seed and applies it with its scale, in one pass
each way (see ``dropout.py``).

Each file is built twice, for float32 and float64, with the system C compiler (``$CC``, else
``cc``) and OpenMP, into ``$XDG_CACHE_HOME/amr/native`` (``~/.cache/amr/native``), keyed by the
source, the flags and this CPU's features; the builds take a few seconds, once.

``-ffast-math`` is given when compiling only, not when linking: linking with it would add
``crtfastmath.o``, which switches the whole process to flush-denormals-to-zero.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from amr.util.io import user_cache_dir

# library name -> (source, its entry points)
SOURCES = {
    "scan": (Path(__file__).with_name("selective_scan_cpu.c"),
             ("scan_forward", "scan_backward", "conv_silu_forward", "conv_silu_backward")),
    "dropout": (Path(__file__).with_name("dropout_cpu.c"), ("dropout_forward", "dropout_backward")),
}
COMPILE_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-std=c11"]
LINK_FLAGS = ["-shared", "-fopenmp"]

_STATE: dict = {"libs": None, "error": None}


class NativeBuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    return user_cache_dir("native")


def _cpu_signature() -> str:
    """Features -march=native compiles for: a cache shared by different CPUs stays correct."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise NativeBuildError("no C compiler found (set $CC or install gcc)")
    return cc


def _build(source: Path, real: str, cc: str) -> Path:
    target_dir = cache_dir()
    compile_cmd = [cc, *COMPILE_FLAGS, f"-DREAL={real}", *(["-DREAL_IS_FLOAT"] if real == "float" else []),
                   "-c", str(source)]
    link_cmd = [cc, *LINK_FLAGS]
    key = hashlib.sha256(
        b"\0".join([source.read_bytes(), " ".join(compile_cmd + link_cmd).encode(), _cpu_signature().encode()])
    ).hexdigest()[:16]
    target = target_dir / f"{source.stem}_{real}_{key}.so"
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir) as tmp:
        obj, lib = Path(tmp) / "kernel.o", Path(tmp) / "kernel.so"
        for cmd in (compile_cmd + ["-o", str(obj)], link_cmd + [str(obj), "-o", str(lib), "-lm"]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise NativeBuildError(f"`{' '.join(cmd)}` failed:\n{proc.stderr.strip()}")
        os.replace(lib, target)  # atomic: concurrent builders never load a half-written file
    return target


def _load() -> dict:
    """{dtype: {library name: loaded library}} for float32 and float64."""
    if _STATE["libs"] is None:
        cc = _compiler()
        libs = {}
        for dtype, real in ((torch.float32, "float"), (torch.float64, "double")):
            libs[dtype] = {}
            for name, (source, functions) in SOURCES.items():
                lib = ctypes.CDLL(str(_build(source, real, cc)))
                for function in functions:
                    getattr(lib, function).restype = None
                libs[dtype][name] = lib
        _STATE["libs"] = libs
    return _STATE["libs"]


def native_available() -> bool:
    """True when the kernels are (or can be) built and loaded; failures are remembered."""
    if _STATE["error"] is not None:
        return False
    try:
        _load()
    except (NativeBuildError, OSError) as exc:
        _STATE["error"] = exc
        return False
    return True


def build_error() -> Exception | None:
    return _STATE["error"]


def _ptr(t: torch.Tensor | None):
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def _sizes(u: torch.Tensor, A: torch.Tensor, chunk: int, softplus: bool, gated: bool, threads: int):
    L, batch, d_inner = u.shape
    return [ctypes.c_int64(v) for v in (L, batch, d_inner, A.shape[1], chunk)] + [
        ctypes.c_int(int(softplus)), ctypes.c_int(int(gated)), ctypes.c_int(threads)]


def scan_forward(u, dt, z, A, B, C, D, bias, chunk: int, softplus: bool, gated: bool):
    """y (L, B, D) and the chunk entry states (K, B, N, D). Inputs contiguous, one dtype."""
    lib = _load()[u.dtype]["scan"]
    L, batch, d_inner = u.shape
    n_chunks = -(-L // chunk)
    y = torch.empty_like(u)
    entry = u.new_empty(n_chunks, batch, A.shape[1], d_inner)
    lib.scan_forward(*map(_ptr, (u, dt, z if gated else None, A, B, C, D, bias, y, entry)),
                     *_sizes(u, A, chunk, softplus, gated, torch.get_num_threads()))
    return y, entry


def scan_backward(u, dt, z, A, B, C, D, bias, entry, grad_y, chunk: int, softplus: bool, gated: bool):
    """Gradients of u, dt, z (None unless gated), A, B, C, D and bias."""
    lib = _load()[u.dtype]["scan"]
    grad_u, grad_dt = torch.empty_like(u), torch.empty_like(u)
    grad_z = torch.empty_like(u) if gated else None
    grad_B, grad_C = torch.zeros_like(B), torch.zeros_like(C)
    grad_A, grad_D, grad_bias = torch.empty_like(A), torch.empty_like(D), torch.empty_like(bias)
    lib.scan_backward(
        *map(_ptr, (u, dt, z if gated else None, A, B, C, D, bias, entry, grad_y,
                    grad_u, grad_dt, grad_z, grad_A, grad_B, grad_C, grad_D, grad_bias)),
        *_sizes(u, A, chunk, softplus, gated, torch.get_num_threads()),
    )
    return grad_u, grad_dt, grad_z, grad_A, grad_B, grad_C, grad_D, grad_bias


def conv_silu_forward(u, weight, bias):
    """silu(causal depthwise conv): u (L, B, E), weight (E, K), bias (E) -> (L, B, E)."""
    lib = _load()[u.dtype]["scan"]
    L, batch, width = u.shape
    out = torch.empty_like(u)
    lib.conv_silu_forward(*map(_ptr, (u, weight, bias, out)),
                          *(ctypes.c_int64(v) for v in (L, batch, width, weight.shape[1])),
                          ctypes.c_int(torch.get_num_threads()))
    return out


def conv_silu_backward(u, weight, bias, grad_out):
    """Gradients of u, weight and bias."""
    lib = _load()[u.dtype]["scan"]
    L, batch, width = u.shape
    grad_u, grad_weight, grad_bias = torch.empty_like(u), torch.empty_like(weight), torch.empty_like(bias)
    lib.conv_silu_backward(*map(_ptr, (u, weight, bias, grad_out, grad_u, grad_weight, grad_bias)),
                           *(ctypes.c_int64(v) for v in (L, batch, width, weight.shape[1])),
                           ctypes.c_int(torch.get_num_threads()))
    return grad_u, grad_weight, grad_bias


def _real(value: float, dtype: torch.dtype):
    return ctypes.c_float(value) if dtype == torch.float32 else ctypes.c_double(value)


def dropout_forward(x, key: int, mult: int, threshold: int, scale: float):
    """x * scale where element i's counter-based draw from the stream (key, mult) is >=
    threshold, else 0; and the drop mask (bool). x contiguous."""
    lib = _load()[x.dtype]["dropout"]
    out, drop = torch.empty_like(x), torch.empty(x.shape, dtype=torch.bool)
    lib.dropout_forward(_ptr(x), ctypes.c_uint32(key), ctypes.c_uint32(mult), ctypes.c_uint32(threshold),
                        _real(scale, x.dtype), _ptr(out), _ptr(drop), ctypes.c_int64(x.numel()),
                        ctypes.c_int(torch.get_num_threads()))
    return out, drop


def dropout_backward(grad, drop, scale: float):
    """grad * scale where not dropped, else 0. grad and drop contiguous."""
    lib = _load()[grad.dtype]["dropout"]
    grad_x = torch.empty_like(grad)
    lib.dropout_backward(_ptr(grad), _ptr(drop), _real(scale, grad.dtype), _ptr(grad_x),
                         ctypes.c_int64(grad.numel()), ctypes.c_int(torch.get_num_threads()))
    return grad_x
