"""QD-DETR moment detector with the report's components (§2.2, §3.1 – §3.5).

Data path (B recordings, L frames, N text tokens, d = hidden width):

    audio (B, L, 768 + 2 TEF) --input proj--> (B, L, d) --+
    text  (B, N, 768)         --input proj--> (B, N, d) --+--> T2V encoder (audio attends text)
        --> [global token | audio] --> audio encoder (2 self-attention layers, or bidirectional
        Mamba) --> memory (B, L, d), global (B, d)
        --> conditional-DETR decoder with Q learnable (c, w) anchors --> class / span heads
        --> saliency = <proj1(memory), proj2(global)> / sqrt(d)

Training-only extras (never change the inference outputs): the negative-query saliency pass,
the coarse branch, boundary-contrast projections and DN queries.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from amr.config.schema import SystemConfig
from amr.model.cascade import CascadeRefiner
from amr.model.denoising import build_denoising_queries, denoising_attention_mask
from amr.model.heads import BoundaryProjection, RerankHead, masked_mean
from amr.model.position import sine_frame_encoding
from amr.model.transformer import (
    MLP,
    ConditionalDecoder,
    InputProjection,
    SelfAttentionEncoder,
    TextToAudioLayer,
    inverse_sigmoid,
)

PADDED_SALIENCY = -1e4  # saliency logit written on padded frames (sigmoid ~ 0)
REQUIRED_KEYS = ("audio", "audio_mask", "text", "text_mask")


class MambaAudioEncoder(nn.Module):
    """Adapter giving the bidirectional Mamba block the audio-encoder call signature.

    A state-space scan is order-aware by itself, so the sine positions are not added.
    """

    def __init__(self, dim: int, cfg):
        super().__init__()
        from amr.model.mamba import BidirectionalMambaEncoder

        self.mamba = BidirectionalMambaEncoder(dim, cfg)

    def forward(self, x, pos, mask):
        return self.mamba(x, mask)


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform init of every matrix in ``module`` (QD-DETR's transformer init).

    Parameters flagged ``_no_reinit`` keep their own initialisation (Mamba's A_log, D and
    dt_proj; the zero-initialised refinement heads).
    """
    for p in module.parameters():
        if p.dim() > 1 and not getattr(p, "_no_reinit", False):
            nn.init.xavier_uniform_(p)


def xavier_mamba_dynamics_(module: nn.Module) -> None:
    """The authors' xavier pass reaches the Mamba block's ``A_log`` and ``dt_proj.weight`` too
    (``mamba.init: xavier``); :func:`xavier_init_` keeps mamba-ssm's values of both."""
    from amr.model.mamba import Mamba

    for m in module.modules():
        if isinstance(m, Mamba):
            nn.init.xavier_uniform_(m.A_log)
            nn.init.xavier_uniform_(m.dt_proj.weight)


def select_cpu_kernels(module: nn.Module, choice: str) -> None:
    """``model.cpu_kernels`` for every module with compiled CPU kernels (dropout, Mamba's scan and
    conv): ``native`` (C kernels built at first use), ``torch`` (torch ops only) or ``auto``
    (native where the system C compiler builds them). Results are the same either way."""
    if choice == "auto":
        from amr.kernels import native

        use_native = native.native_available()
    else:
        use_native = choice == "native"
    for m in module.modules():
        if hasattr(m, "native_cpu_kernels"):
            m.native_cpu_kernels = use_native


def cpu_kernels_in_use(module: nn.Module) -> str:
    """``native`` or ``torch``: how this model's CPU dropout and Mamba kernels run."""
    from amr.kernels import native

    wants = any(getattr(m, "native_cpu_kernels", False) for m in module.modules())
    return "native" if wants and native.native_available() else "torch"


class MomentDetector(nn.Module):
    def __init__(self, cfg: SystemConfig):
        super().__init__()
        self.cfg = cfg
        b = cfg.backbone
        d = self.hidden_dim = b.hidden_dim
        self.num_queries = b.num_queries
        self.feature_dim = cfg.data.feature_dim
        audio_in = cfg.data.feature_dim + (2 if b.use_tef else 0)

        self.audio_proj = InputProjection(audio_in, d, b.input_proj_layers, b.input_dropout)
        self.text_proj = InputProjection(cfg.data.text_dim, d, b.input_proj_layers, b.input_dropout)
        self.t2v_layers = nn.ModuleList(
            TextToAudioLayer(d, b.heads, b.ffn_dim, b.dropout, b.attention_dropout, b.activation, b.attention_init,
                             b.t2v_residual)
            for _ in range(b.t2v_layers)
        )
        if cfg.mamba.enabled:  # §2.2: Mamba replaces the self-attention audio encoder
            self.audio_encoder = MambaAudioEncoder(d, cfg.mamba)
        else:
            self.audio_encoder = SelfAttentionEncoder(
                d, b.heads, b.ffn_dim, b.dropout, b.attention_dropout, b.activation, b.encoder_layers,
                b.attention_init,
            )
        self.decoder = ConditionalDecoder(d, b.heads, b.ffn_dim, b.dropout, b.attention_dropout, b.activation,
                                          b.decoder_layers, b.attention_init, b.refine_init)
        xavier_init_(nn.ModuleList([self.t2v_layers, self.audio_encoder, self.decoder]))
        if cfg.mamba.enabled and cfg.mamba.init == "xavier":
            xavier_mamba_dynamics_(self.audio_encoder)

        self.query_embed = nn.Embedding(b.num_queries, 2)  # learnable (c, w) anchors, logit space
        self.class_head = nn.Linear(d, 2)  # [foreground, background]
        self.span_head = MLP(d, d, 2, 3)
        self.saliency_proj1 = nn.Linear(d, d)
        self.saliency_proj2 = nn.Linear(d, d)
        self.global_token = nn.Parameter(torch.randn(d))
        self.global_pos = nn.Parameter(torch.randn(d))

        self.rerank = RerankHead(d) if cfg.rerank.enabled else None
        self.boundary = BoundaryProjection(d) if cfg.boundary_contrast.enabled else None
        self.cascade = (CascadeRefiner(d, cfg.cascade, b.dropout, b.attention_dropout, b.attention_init)
                        if cfg.cascade.enabled else None)
        select_cpu_kernels(self, b.cpu_kernels)

    # ------------------------------------------------------------------------------------------
    # stages
    # ------------------------------------------------------------------------------------------
    def encode(self, audio, audio_mask, text, text_mask):
        """Projected audio (B, L, d) + text (B, N, d) -> memory (B, L, d), global (B, d), pos."""
        pos = sine_frame_encoding(audio_mask, self.hidden_dim)
        x = audio
        for layer in self.t2v_layers:
            x = layer(x, pos, text, text_mask)
        x = x * audio_mask[..., None]  # padded frames carry nothing into the encoder
        batch = x.shape[0]
        seq = torch.cat([self.global_token.expand(batch, 1, -1), x], 1)
        seq_pos = torch.cat([self.global_pos.expand(batch, 1, -1), pos], 1)
        seq_mask = torch.cat([audio_mask.new_ones(batch, 1), audio_mask], 1)
        seq = self.audio_encoder(seq, seq_pos, seq_mask)
        # contiguous once here, not inside each of the several projections that read the memory
        return seq[:, 1:].contiguous(), seq[:, 0], pos

    def decode(self, memory, memory_mask, pos, anchors_unsigmoid, self_attn_allowed=None):
        """-> hidden (layers, B, Qt, d), logits (layers, B, Qt, 2), spans (layers, B, Qt, 2) cw."""
        tgt = memory.new_zeros(anchors_unsigmoid.shape[0], anchors_unsigmoid.shape[1], self.hidden_dim)
        hidden, references = self.decoder(tgt, memory, memory_mask, pos, anchors_unsigmoid, self_attn_allowed)
        logits = self.class_head(hidden)
        spans = (self.span_head(hidden) + inverse_sigmoid(references)).sigmoid()
        return hidden, logits, spans

    def saliency(self, memory, memory_global, mask):
        scores = (self.saliency_proj1(memory) * self.saliency_proj2(memory_global)[:, None]).sum(-1)
        return (scores / math.sqrt(self.hidden_dim)).masked_fill(~mask, PADDED_SALIENCY)

    def project_audio(self, features, tef):
        return self.audio_proj(torch.cat([features, tef], -1) if self.cfg.backbone.use_tef else features)

    def coarse_audio(self, features, audio_mask):
        """§3.1: project each frame with the TEF of its coarse cell, then average-pool ×pool.

        TEF enters before the input projection, so the coarse grid's TEF [j/T', (j+1)/T']
        (T' = ceil(T / pool)) is appended to every fine frame of cell j and goes through the
        same projection; the pooled result is what the fine path would see at that resolution.
        Returns pooled audio (B, L', d), mask (B, L'), and the factor mapping fine-normalised
        span coordinates to the coarse grid, T / (pool T') per recording.
        """
        pool = self.cfg.coarse.pool
        batch, length, _ = features.shape
        lengths = audio_mask.sum(1)
        coarse_lengths = torch.div(lengths + pool - 1, pool, rounding_mode="floor").clamp(min=1)
        cell = torch.div(torch.arange(length, device=features.device), pool, rounding_mode="floor")
        denom = coarse_lengths[:, None].to(features.dtype)
        tef = torch.stack([cell / denom, (cell + 1) / denom], -1) * audio_mask[..., None]
        projected = self.project_audio(features, tef) * audio_mask[..., None]

        padded = -(-length // pool) * pool
        projected = nn.functional.pad(projected, (0, 0, 0, padded - length))
        weights = nn.functional.pad(audio_mask.to(features.dtype), (0, padded - length))
        sums = projected.reshape(batch, padded // pool, pool, -1).sum(2)
        counts = weights.reshape(batch, padded // pool, pool).sum(2)
        pooled = sums / counts.clamp(min=1.0)[..., None]
        span_scale = lengths.to(features.dtype) / (coarse_lengths * pool).to(features.dtype)
        return pooled, counts > 0, span_scale

    # ------------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        audio, audio_mask, text, text_mask = self._inputs(batch)
        batch_size = audio.shape[0]
        q = self.num_queries
        lengths = audio_mask.sum(1)
        features = audio[..., : self.feature_dim]
        # audio already is [features | TEF]: projected as it is, not re-concatenated
        audio_p = self.audio_proj(audio if self.cfg.backbone.use_tef else features)
        text_p = self.text_proj(text)

        negative_pass = self.training and batch_size > 1
        if negative_pass:
            # QD-DETR's negative query: the same audio with the next sample's text (training only);
            # run in the same encoder call as the positive pair
            neg_text, neg_mask = text_p.roll(-1, 0), text_mask.roll(-1, 0)
            memory, memory_global, pos = self.encode(
                torch.cat([audio_p, audio_p]), torch.cat([audio_mask, audio_mask]),
                torch.cat([text_p, neg_text]), torch.cat([text_mask, neg_mask]),
            )
            saliency_neg = self.saliency(memory[batch_size:], memory_global[batch_size:], audio_mask)
            memory, memory_global, pos = memory[:batch_size], memory_global[:batch_size], pos[:batch_size]
        else:
            memory, memory_global, pos = self.encode(audio_p, audio_mask, text_p, text_mask)

        anchors = self.query_embed.weight[None].expand(batch_size, -1, -1)
        allowed, dn = None, None
        if self.training and self.cfg.dn.enabled and "spans" in batch and bool(batch["span_mask"].any()):
            dn = build_denoising_queries(batch["spans"], batch["span_mask"], self.cfg.dn.copies, self.cfg.dn.sigma)
            anchors = torch.cat([anchors, dn.anchors_unsigmoid], 1)
            allowed = denoising_attention_mask(q, dn)
        hidden, logits, spans = self.decode(memory, audio_mask, pos, anchors, allowed)

        out = _layer_outputs(logits[:, :, :q], spans[:, :, :q])
        out["saliency"] = self.saliency(memory, memory_global, audio_mask)
        text_pooled = masked_mean(text_p, text_mask)
        if self.rerank is not None:
            out["rerank_scores"] = self.rerank(memory, lengths, out["pred_spans"], text_pooled)
        if self.cascade is not None:
            out["refined_spans"] = self.cascade(hidden[-1, :, :q], out["pred_spans"], memory, lengths)

        if self.training:
            if negative_pass:
                out["saliency_neg"] = saliency_neg
            if dn is not None:
                out["dn"] = {"pred_logits": logits[-1, :, q:], "pred_spans": spans[-1, :, q:],
                             "valid": dn.valid, "target_index": dn.target_index}
            if self.boundary is not None:
                out["boundary_audio"], out["boundary_text"] = self.boundary(memory, text_pooled)
            if self.cfg.coarse.enabled:
                out["coarse"] = self._coarse_forward(features, audio_mask, text, text_mask)
        return out

    def _coarse_forward(self, features, audio_mask, text, text_mask) -> dict:
        pooled, mask, span_scale = self.coarse_audio(features, audio_mask)
        # the text projected again, with its own dropout draw, as in the authors' branch
        memory, _, pos = self.encode(pooled, mask, self.text_proj(text), text_mask)
        anchors = self.query_embed.weight[None].expand(pooled.shape[0], -1, -1)
        _, logits, spans = self.decode(memory, mask, pos, anchors)
        out = _layer_outputs(logits, spans)
        out["span_scale"] = span_scale
        return out

    def _inputs(self, batch: dict):
        missing = [k for k in REQUIRED_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch lacks {missing}; see the batch contract in docs/interfaces.md")
        audio, audio_mask = batch["audio"], batch["audio_mask"].bool()
        text, text_mask = batch["text"], batch["text_mask"].bool()
        expected = self.feature_dim + 2
        if audio.dim() != 3 or audio.shape[-1] != expected:
            raise ValueError(
                f"batch['audio'] has shape {tuple(audio.shape)}, expected (B, L, {expected}) = "
                f"{self.feature_dim} features + 2 TEF; check data.feature_dim in params.yaml"
            )
        if text.dim() != 3 or text.shape[-1] != self.cfg.data.text_dim:
            raise ValueError(
                f"batch['text'] has shape {tuple(text.shape)}, expected (B, N, {self.cfg.data.text_dim}); "
                "check data.text_dim in params.yaml"
            )
        if not bool(audio_mask.any(1).all()) or not bool(text_mask.any(1).all()):
            raise ValueError("every recording needs at least one audio frame and one text token")
        return audio, audio_mask, text, text_mask


def _layer_outputs(logits: torch.Tensor, spans: torch.Tensor) -> dict:
    """Per-layer stacks (layers, B, Q, ·) -> last layer + ``aux_outputs`` for the earlier ones."""
    return {
        "pred_logits": logits[-1],
        "pred_spans": spans[-1],
        "aux_outputs": [
            {"pred_logits": logits[i], "pred_spans": spans[i]} for i in range(logits.shape[0] - 1)
        ],
    }
