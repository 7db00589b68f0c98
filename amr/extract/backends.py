"""Feature extractors behind one small interface.

A backend has ``name`` (what it is, with a version), ``checkpoint_sha256`` ("" when it has no
weights file), ``sample_rate`` (Hz of the windows it takes) and two methods:

- ``encode_audio(waves)``: float32 ``(B, sample_rate)`` -> ``(B, D)``, one vector per 1-s window;
- ``encode_text(query)``: one query -> ``(n_tokens, D)`` token states of the attended tokens.
  A query with no token besides the special ones raises :class:`EmptyText`.

Backends: ``m2d`` (the authors' recipe on the user's clone of the M2D repository, SPEC §2.1),
``plugin`` (``module:factory`` from params, any other extractor) and ``test`` (deterministic,
no weights: tests, CI and benchmarks of everything around the model).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np

from amr.config.schema import ExtractSource
from amr.util.errors import AmrError


class ExtractError(AmrError, RuntimeError):
    """Extraction cannot go on; the message names the file or setting and the fix."""


class EmptyText(ExtractError):
    """A query that tokenises to nothing but special tokens."""


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------
# test: deterministic, no weights
# ---------------------------------------------------------------------------------------------
class TestBackend:
    """Window statistics (log energy of 16 frames and of 16 spectral bands) through a fixed
    random projection; text tokens are hashed words. Each row depends only on its own window or
    token, whatever the batch, so resumed runs write byte-identical files."""

    __test__ = False  # not a pytest class
    sample_rate = 16000
    checkpoint_sha256 = ""

    def __init__(self, audio_dim: int = 768, text_dim: int = 768, max_text_tokens: int = 32):
        self.name = f"test (deterministic window statistics, {audio_dim}-d)"
        self.max_text_tokens = max_text_tokens
        self.text_dim = text_dim
        self._projection = np.random.default_rng(0).standard_normal((32, audio_dim)) / np.sqrt(32)

    def encode_audio(self, waves: np.ndarray) -> np.ndarray:
        out = np.empty((waves.shape[0], self._projection.shape[1]), np.float32)
        for row, wave in enumerate(np.asarray(waves, np.float64)):
            frames = wave[: wave.shape[0] // 16 * 16].reshape(16, -1)
            power = np.abs(np.fft.rfft(wave)) ** 2
            bands = np.array_split(power, 16)
            stats = np.log1p(np.concatenate([(frames ** 2).mean(axis=1) * 1e3,
                                             [b.mean() for b in bands]]))
            out[row] = np.tanh(stats @ self._projection)
        return out

    def encode_text(self, query: str) -> np.ndarray:
        words = re.findall(r"[a-z0-9]+", query.lower())
        if not words:
            raise EmptyText(f"query {query!r} has no word")
        tokens = ["[CLS]", *words[: self.max_text_tokens - 2], "[SEP]"]
        return np.stack([_token_vector(t, self.text_dim) for t in tokens])


def _token_vector(token: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# m2d: the authors' recipe (SPEC §2.1)
# ---------------------------------------------------------------------------------------------
# where a clone of the M2D repository keeps portable_m2d.py (data.extract.m2d.repo), first found
PORTABLE_M2D = ("examples/portable_m2d.py", "portable_m2d.py")


def find_portable_m2d(repo: Path) -> Path:
    for candidate in (repo / name for name in PORTABLE_M2D):
        if candidate.is_file():
            return candidate
    raise ExtractError(f"{repo}: no examples/portable_m2d.py; data.extract.m2d.repo must be a "
                       "clone of https://github.com/nttcslab/m2d")


class M2DBackend:
    """``portable_m2d.PortableM2D`` of the user's clone, in eval mode under ``no_grad``."""

    sample_rate = 16000

    def __init__(self, repo: str | Path, checkpoint: str | Path, device, max_text_tokens: int = 32):
        import torch

        repo, checkpoint = Path(repo), Path(checkpoint)
        if not checkpoint.is_file():
            raise ExtractError(f"{checkpoint}: M2D-CLAP checkpoint not found "
                               "(data.extract.m2d.checkpoint; SPEC §2.1 names the file)")
        source = find_portable_m2d(repo)
        module = _import_file("portable_m2d", source)
        self.device = torch.device(device)
        self.max_text_tokens = max_text_tokens
        self.model = module.PortableM2D(str(checkpoint), flat_features=True)
        if not hasattr(self.model, "get_clap_text_encoder"):
            raise ExtractError(
                f"{source}: PortableM2D has no get_clap_text_encoder(); this version builds no "
                "BERT token states. Update the clone (git pull) to a portable_m2d.py with "
                "get_clap_text_encoder (the 2025 M2D-CLAP release)")
        self.model.get_clap_text_encoder()
        self.model.eval().to(self.device)
        text_encoder = self.model.text_encoder
        if hasattr(text_encoder, "to"):  # in case it is not registered as a submodule
            text_encoder.to(self.device)
        self.checkpoint_sha256 = file_sha256(checkpoint)
        self.name = (f"M2D-CLAP ({checkpoint.parent.name}/{checkpoint.name}; portable_m2d.py "
                     f"sha256 {file_sha256(source)[:12]})")

    def encode_audio(self, waves: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(waves, np.float32)).to(self.device)
            return self.model.encode_clap_audio(x).float().cpu().numpy()

    def encode_text(self, query: str) -> np.ndarray:
        import torch

        encoder = self.model.text_encoder
        tokens = encoder.tokenizer(query, truncation=True, max_length=self.max_text_tokens,
                                   return_tensors="pt")
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device)
        if int(mask.sum()) <= 2:  # [CLS] [SEP] only
            raise EmptyText(f"query {query!r} tokenises to no word piece")
        with torch.no_grad():
            states = encoder.text_encoder(input_ids=ids, attention_mask=mask)[0][0]
        return states[mask[0].bool()].float().cpu().numpy()


def _import_file(name: str, path: Path):
    """Import ``path`` as module ``name`` with its folder (and the repository above) on
    sys.path, so that its own imports resolve."""
    for folder in (path.parent.parent, path.parent):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise ExtractError(f"{path}: cannot import ({exc}); the M2D code needs timm, einops and "
                           "nnAudio: pip install timm einops nnAudio") from None
    return module


# ---------------------------------------------------------------------------------------------
# plugin: module:factory
# ---------------------------------------------------------------------------------------------
def load_plugin(factory: str, path: str, checkpoint: str, device, max_text_tokens: int):
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        raise ExtractError(f"data.extract.plugin.factory: expected 'module:callable', got {factory!r}")
    if path:
        sys.path.insert(0, str(Path(path).resolve()))
    try:
        make = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExtractError(f"data.extract.plugin.factory {factory!r}: {exc}") from None
    backend = make(device=str(device), max_text_tokens=max_text_tokens)
    missing = [a for a in ("name", "encode_audio", "encode_text") if not hasattr(backend, a)]
    if missing:
        raise ExtractError(f"data.extract.plugin.factory {factory!r} returned an object without "
                           f"{missing} (see amr.extract.backends)")
    if not hasattr(backend, "sample_rate"):
        backend.sample_rate = 16000
    if checkpoint:
        backend.checkpoint_sha256 = file_sha256(checkpoint)
    elif not hasattr(backend, "checkpoint_sha256"):
        backend.checkpoint_sha256 = ""
    return backend


def make_backend(cfg: ExtractSource, device, audio_dim: int, text_dim: int, max_text_tokens: int):
    if cfg.backend == "test":
        return TestBackend(audio_dim, text_dim, max_text_tokens)
    if cfg.backend == "m2d":
        for key in ("repo", "checkpoint"):
            if not getattr(cfg.m2d, key):
                raise ExtractError(f"params.yaml: data.extract.m2d.{key} is empty (SPEC §2.1)")
        return M2DBackend(cfg.m2d.repo, cfg.m2d.checkpoint, device, max_text_tokens)
    if cfg.backend == "plugin":
        return load_plugin(cfg.plugin.factory, cfg.plugin.path, cfg.plugin.checkpoint, device,
                           max_text_tokens)
    raise ExtractError(f"params.yaml: data.extract.backend must be m2d, plugin or test, "
                       f"not {cfg.backend!r}")
