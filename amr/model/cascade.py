"""Cascade refinement decoder (report §3.5, Eq. 6).

Each first-stage query reads a crop of the audio memory around its own predicted span and
emits a bounded residual on (c, w): δ = κ·tanh(W_δ h̃), s' = clip(s + δ, 0, 1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from amr.config.schema import CascadeConfig
from amr.model.heads import span_frame_interval
from amr.model.transformer import Attention, FeedForward

MIN_WIDTH = 1e-3


def crop_index(start: torch.Tensor, end: torch.Tensor, max_crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame index of every crop slot (B, Q, C) and its validity, for all queries at once.

    C is the longest crop in the batch (at most ``max_crop``); shorter crops are padded by
    repeating their first frame and masked out.
    """
    length = (end - start).clamp(max=max_crop)
    offsets = torch.arange(int(length.max()), device=start.device)
    valid = offsets < length[..., None]
    return torch.where(valid, start[..., None] + offsets, start[..., None]), valid


class CascadeRefiner(nn.Module):
    def __init__(self, dim: int, cfg: CascadeConfig, dropout: float, attention_dropout: float,
                 attention_init: str = "multihead"):
        super().__init__()
        self.cfg = cfg
        self.crop_position = nn.Embedding(cfg.max_crop, dim)  # offset inside the crop
        # as the authors' layer: an attention and a GELU FFN with dropout inside, no dropout on
        # the residuals, PyTorch's own initialisation (it sits outside the xavier pass)
        self.cross_attn = Attention(dim, cfg.heads, attention_dropout, attention_init)
        self.ffn = FeedForward(dim, cfg.ffn_dim, dropout, "gelu")
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.delta_head = nn.Linear(dim, 2)
        # zero head: the refinement is exactly the identity at initialisation
        nn.init.zeros_(self.delta_head.weight)
        nn.init.zeros_(self.delta_head.bias)
        self.delta_head.weight._no_reinit = True

    def forward(self, query_state, spans, memory, lengths):
        """query_state (B, Q, D), spans (B, Q, 2) cw, memory (B, L, D), lengths (B,) -> (B, Q, 2)."""
        query_state, spans = query_state.detach(), spans.detach()
        if self.cfg.detach_memory:
            memory = memory.detach()
        start, end = span_frame_interval(spans, lengths, self.cfg.margin)
        index, valid = crop_index(start, end, self.cfg.max_crop)
        attended = self.attend_crops(query_state, memory, index, valid)
        h = self.norm1(query_state + attended)
        h = self.norm2(h + self.ffn(h))
        refined = spans + self.cfg.kappa * torch.tanh(self.delta_head(h))
        # centre in [0, 1]; a width never collapses (the authors' floor)
        return torch.stack([refined[..., 0].clamp(0.0, 1.0), refined[..., 1].clamp(MIN_WIDTH, 1.0)], -1)

    def attend_crops(self, query_state, memory, index, valid):
        """Each query attends to its own crop tokens memory[index] + position[slot].

        Same result as gathering the (B, Q, C, D) crops and running the attention on them,
        without materialising them: k/v projections are linear, so the content part of each
        crop logit is gathered from the query-vs-frame logits (B, H, Q, L), and the attention
        weights are scattered back onto frames to read the values.
        """
        attn = self.cross_attn
        b, q, d = query_state.shape
        heads, c = attn.heads, index.shape[-1]
        e = d // heads

        def split(x):  # (B, N, D) -> (B, H, N, e)
            return x.view(x.shape[0], x.shape[1], heads, e).transpose(1, 2)

        query = split(attn.q_proj(query_state))
        keys, values = split(attn.k_proj(memory)), split(attn.v_proj(memory))
        position = self.crop_position.weight[:c]
        key_pos = F.linear(position, attn.k_proj.weight).view(c, heads, e).transpose(0, 1)  # (H, C, e)
        value_pos = F.linear(position, attn.v_proj.weight).view(c, heads, e).transpose(0, 1)

        slots = index[:, None].expand(b, heads, q, c)
        logits = (query @ keys.transpose(-1, -2)).gather(-1, slots)
        logits = (logits + torch.einsum("bhqe,hce->bhqc", query, key_pos)) / math.sqrt(e)
        weights = logits.masked_fill(~valid[:, None], float("-inf")).softmax(-1)
        weights = attn.attention_dropout(weights)
        frame_weights = weights.new_zeros(b, heads, q, memory.shape[1]).scatter_add(-1, slots, weights)
        out = frame_weights @ values + torch.einsum("bhqc,hce->bhqe", weights, value_pos)
        return attn.out_proj(out.transpose(1, 2).reshape(b, q, d))
