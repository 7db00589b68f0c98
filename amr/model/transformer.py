"""Transformer building blocks of QD-DETR, batch-first, with explicit boolean masks.

Masks follow one convention everywhere: ``True`` = a real (valid) frame / token / key that may
be attended to. Attention is computed with ``scaled_dot_product_attention`` on a boolean
"may attend" mask, so padded keys never contribute to a valid query.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amr.kernels.dropout import Dropout
from amr.model.position import sine_span_encoding


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


class MLP(nn.Module):
    """Linear layers with ReLU in between (DETR's box / query MLPs)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class InputProjection(nn.Sequential):
    """QD-DETR's stacked LinearLayer: (LayerNorm -> Dropout -> Linear [-> ReLU]) x n.

    Every layer but the last ends with a ReLU, so the output is an unconstrained embedding.
    """

    def __init__(self, in_dim: int, out_dim: int, num_layers: int, dropout: float):
        layers = []
        for i in range(num_layers):
            last = i == num_layers - 1
            block = [nn.LayerNorm(in_dim if i == 0 else out_dim), Dropout(dropout)]
            block.append(nn.Linear(in_dim if i == 0 else out_dim, out_dim))
            if not last:
                block.append(nn.ReLU())
            layers.append(nn.Sequential(*block))
        super().__init__(*layers)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    allowed: torch.Tensor | None,
    dropout: Dropout | None = None,
) -> torch.Tensor:
    """Multi-head attention on already projected inputs.

    q: (B, Lq, Eqk), k: (B, Lk, Eqk), v: (B, Lk, Ev); ``allowed`` broadcastable to
    (B, Lq, Lk), True = may attend. The q/k head width (Eqk / heads) may differ from the value
    head width, as in conditional DETR's cross-attention. ``dropout`` (training, p > 0) drops
    attention weights after the softmax, as ``nn.MultiheadAttention`` does; it is amr's
    :class:`Dropout`, so the masks follow torch's seed and the CPU kernels like every other
    dropout. Returns (B, Lq, Ev).
    """
    b, lq, _ = q.shape
    lk = k.shape[1]

    def split(x: torch.Tensor, length: int) -> torch.Tensor:
        return x.reshape(b, length, heads, -1).transpose(1, 2)

    q, k, v = split(q, lq), split(k, lk), split(v, lk)
    if allowed is not None and allowed.dim() == 2:
        allowed = allowed[None]  # (Lq, Lk): the same for every batch element
    if dropout is None or not dropout.training or dropout.p == 0.0:
        mask = None if allowed is None else allowed.unsqueeze(1)  # broadcast over heads
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(b, lq, -1)
    # batch x heads as one bmm batch; the mask enters as an additive bias of the scaled product
    q, k, v = (x.reshape(b * heads, x.shape[2], x.shape[3]) for x in (q, k, v))
    scale = q.shape[-1] ** -0.5
    if allowed is None:
        logits = torch.bmm(q, k.transpose(1, 2)).mul_(scale)
    else:
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
        rows = bias.shape[1]  # (B | 1, Lq | 1, Lk)
        bias = bias[:, None].expand(b, heads, rows, lk).reshape(b * heads, rows, lk)
        logits = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
    out = torch.bmm(dropout(logits.softmax(-1)), v)
    return out.view(b, heads, lq, -1).transpose(1, 2).reshape(b, lq, -1)


def multihead_attention_init_(q_proj: nn.Linear, k_proj: nn.Linear, v_proj: nn.Linear,
                              out_proj: nn.Linear) -> None:
    """``nn.MultiheadAttention``'s initialisation, which QD-DETR's attention layers have: the
    three input projections are rows of ONE xavier-uniform (3d x d) matrix (so each is drawn
    1/sqrt(2) as wide as a xavier (d x d) matrix), their biases and the output bias are zero,
    the output weight keeps nn.Linear's draw (a model-wide xavier pass, where the layer has one,
    draws it again). The input weights are flagged ``_no_reinit`` so that such a pass keeps them."""
    dim = q_proj.in_features
    fused = torch.empty(3 * dim, dim)
    nn.init.xavier_uniform_(fused)
    with torch.no_grad():
        for proj, rows in zip((q_proj, k_proj, v_proj), fused.chunk(3)):
            proj.weight.copy_(rows)
            proj.weight._no_reinit = True
            nn.init.zeros_(proj.bias)
    nn.init.zeros_(out_proj.bias)


def key_padding(mask: torch.Tensor) -> torch.Tensor:
    """(B, Lk) valid mask -> (B, 1, Lk) "may attend" mask for attend()."""
    return mask[:, None, :]


class Attention(nn.Module):
    """Standard multi-head attention with its own q/k/v/out projections; ``init`` ``multihead``
    starts them as ``nn.MultiheadAttention`` (:func:`multihead_attention_init_`), ``linear`` leaves
    each an ``nn.Linear`` (a model-wide xavier pass then draws each weight alone)."""

    def __init__(self, dim: int, heads: int, attention_dropout: float, init: str = "multihead"):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.attention_dropout = Dropout(attention_dropout)
        if init == "multihead":
            multihead_attention_init_(self.q_proj, self.k_proj, self.v_proj, self.out_proj)

    def forward(self, query, key, value, allowed=None):
        out = attend(self.q_proj(query), self.k_proj(key), self.v_proj(value), self.heads, allowed,
                     self.attention_dropout)
        return self.out_proj(out)


def make_activation(name: str) -> nn.Module:
    """``prelu`` is QD-DETR's: one learnable slope (init 0.25) shared by all channels."""
    return {"prelu": nn.PReLU, "relu": nn.ReLU, "gelu": nn.GELU}[name]()


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, activation: str = "relu"):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.activation = make_activation(activation)
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class TextToAudioLayer(nn.Module):
    """QD-DETR's T2V layer: audio frames (queries) attend to text tokens, then an FFN.

    ``residual`` ``qd_detr`` (QD-DETR's and the authors' code): the FFN reads the normalised
    stream but its residual adds to the un-normalised one, y = x + attn, out = norm2(y +
    FFN(norm1(y))); ``postnorm``: both sub-layers post-norm, out = norm2(n + FFN(n)) with
    n = norm1(x + attn). Text tokens carry no position encoding (QD-DETR's default), audio
    queries carry the sine frame encoding. Only the audio stream is updated.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation: str, attention_init: str = "multihead", residual: str = "qd_detr"):
        super().__init__()
        self.residual = residual
        self.cross_attn = Attention(dim, heads, attention_dropout, attention_init)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, audio, audio_pos, text, text_mask):
        attended = self.cross_attn(audio + audio_pos, text, text, key_padding(text_mask))
        audio = audio + self.dropout1(attended)
        if self.residual == "postnorm":
            audio = self.norm1(audio)
            return self.norm2(audio + self.dropout2(self.ffn(audio)))
        return self.norm2(audio + self.dropout2(self.ffn(self.norm1(audio))))


class SelfAttentionLayer(nn.Module):
    """DETR encoder layer: self-attention (position added to q, k) + FFN, post-norm."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation: str, attention_init: str = "multihead"):
        super().__init__()
        self.self_attn = Attention(dim, heads, attention_dropout, attention_init)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, x, pos, mask):
        qk = x + pos
        x = self.norm1(x + self.dropout1(self.self_attn(qk, qk, x, key_padding(mask))))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class SelfAttentionEncoder(nn.Module):
    """The 2-layer audio encoder of QD-DETR (replaced by the bidirectional Mamba block)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation: str, num_layers: int, attention_init: str = "multihead"):
        super().__init__()
        self.layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads, ffn_dim, dropout, attention_dropout, activation, attention_init)
            for _ in range(num_layers)
        )

    def forward(self, x, pos, mask):
        for layer in self.layers:
            x = layer(x, pos, mask)
        return x


class ConditionalDecoderLayer(nn.Module):
    """Conditional-DETR decoder layer (content and position projected separately).

    Cross-attention concatenates content and spatial parts per head, so its q/k heads are
    twice as wide as its value heads. ``ca_qpos_proj`` exists only in the first layer.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation: str, first: bool, attention_init: str = "multihead"):
        super().__init__()
        self.heads = heads
        self.attention_dropout = Dropout(attention_dropout)
        self.sa_qcontent_proj = nn.Linear(dim, dim)
        self.sa_qpos_proj = nn.Linear(dim, dim)
        self.sa_kcontent_proj = nn.Linear(dim, dim)
        self.sa_kpos_proj = nn.Linear(dim, dim)
        self.sa_v_proj = nn.Linear(dim, dim)
        self.sa_out_proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)

        self.ca_qcontent_proj = nn.Linear(dim, dim)
        self.ca_qpos_proj = nn.Linear(dim, dim) if first else None
        self.ca_kcontent_proj = nn.Linear(dim, dim)
        self.ca_kpos_proj = nn.Linear(dim, dim)
        self.ca_v_proj = nn.Linear(dim, dim)
        self.ca_qpos_sine_proj = nn.Linear(dim, dim)
        self.ca_out_proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)

        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1, self.dropout2, self.dropout3 = (Dropout(dropout) for _ in range(3))
        if attention_init == "multihead":
            # conditional DETR's attention modules zero their output bias (the input projections
            # above keep nn.Linear's bias; the model-wide xavier pass draws every weight)
            nn.init.zeros_(self.sa_out_proj.bias)
            nn.init.zeros_(self.ca_out_proj.bias)

    def _concat_heads(self, content: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
        b, n, d = content.shape
        h = self.heads
        return torch.cat([content.view(b, n, h, d // h), spatial.view(b, n, h, d // h)], -1).view(b, n, 2 * d)

    def forward(self, tgt, memory, memory_mask, pos, query_pos, query_sine_embed, self_attn_allowed):
        drop = self.attention_dropout
        # self-attention among queries (the DN mask keeps denoising groups apart)
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        attended = attend(q, k, self.sa_v_proj(tgt), self.heads, self_attn_allowed, drop)
        tgt = self.norm1(tgt + self.dropout1(self.sa_out_proj(attended)))

        # cross-attention to the audio memory
        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        k_pos = self.ca_kpos_proj(pos)
        if self.ca_qpos_proj is not None:  # first layer: position also enters the content part
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        q = self._concat_heads(q, self.ca_qpos_sine_proj(query_sine_embed))
        k = self._concat_heads(k, k_pos)
        attended = attend(q, k, self.ca_v_proj(memory), self.heads, key_padding(memory_mask), drop)
        tgt = self.norm2(tgt + self.dropout2(self.ca_out_proj(attended)))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class ConditionalDecoder(nn.Module):
    """QD-DETR's decoder: DAB-style (c, w) anchors refined layer by layer in logit space.

    ``query_scale``, ``ref_point_head``, ``ref_anchor_head`` (width-modulated attention) and
    the anchor-refinement MLP ``bbox_embed`` are shared across layers.
    Returns the normalised hidden states of every layer (layers, B, Q, D) and the reference
    point each layer started from (layers, B, Q, 2), in sigmoid space.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation: str, num_layers: int, attention_init: str = "multihead", refine_init: str = "random"):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(
            ConditionalDecoderLayer(dim, heads, ffn_dim, dropout, attention_dropout, activation, first=(i == 0),
                                    attention_init=attention_init)
            for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.query_scale = MLP(dim, dim, dim, 2)
        self.ref_point_head = MLP(dim, dim, dim, 2)
        self.ref_anchor_head = MLP(dim, dim, 1, 2)
        self.bbox_embed = MLP(dim, dim, 2, 3)
        last = self.bbox_embed.layers[-1]
        nn.init.zeros_(last.bias)
        if refine_init == "zero":  # kept through the model-wide xavier pass
            nn.init.zeros_(last.weight)
            last.weight._no_reinit = True
        # "random": QD-DETR zeroes the last layer, then its model-wide xavier pass draws the
        # weight again (the model's xavier pass does it here), the bias stays zero

    def forward(self, tgt, memory, memory_mask, pos, anchors_unsigmoid, self_attn_allowed=None):
        reference = anchors_unsigmoid.sigmoid()
        references, hidden = [reference], []
        output = tgt
        for i, layer in enumerate(self.layers):
            sine = sine_span_encoding(reference, self.dim)
            query_pos = self.ref_point_head(sine)
            if i > 0:
                sine = sine * self.query_scale(output)
            # width-modulated attention: scale the spatial query by predicted / anchor width
            width_ratio = self.ref_anchor_head(output).sigmoid()[..., 0] / reference[..., 1]
            sine = sine * width_ratio[..., None]
            output = layer(output, memory, memory_mask, pos, query_pos, sine, self_attn_allowed)
            hidden.append(self.norm(output))
            if i < len(self.layers) - 1:
                refined = (self.bbox_embed(output) + inverse_sigmoid(reference)).sigmoid()
                references.append(refined)
                reference = refined.detach()  # each layer learns its own residual
        return torch.stack(hidden), torch.stack(references)
