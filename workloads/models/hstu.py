"""HSTU, the generative recommender of Zhai et al. (ICML 2024), over jagged user histories.

No maintained library ships it, so this is a compact implementation of the published layer:
    U, V, Q, K = split(SiLU(LN(x) W_uvqk))
    A = SiLU(alpha Q K^T + rab) / N         (causal, no softmax; rab = position + time bias)
    y = x + W_o(U * LN(A V))                (LN per head: generative-recommenders' group norm)
Histories are packed (sum of lengths, D) with offsets; the attention is the one place where
sequences meet, and it runs as `attn_implementation` says (eager, memory_efficient, fused: see
engine/hstu_attention.py). The first layers see the whole history, the later ones each
history's most recent items only (seed paper 1's configuration).

Heads (task H-A): ranking predicts the candidate's engagement type from the output at the
last position of each history (the candidate, whose action is not known yet); retrieval
scores that output against every item's embedding and returns the top items.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.hstu_attention import IMPLEMENTATIONS, Jagged, jagged_attention
from .common import Preset, default_dtype

MODEL_TYPE = "hstu"


@dataclass(frozen=True)
class HSTUConfig:
    num_items: int = 6001            # seed paper 1: synthetic item ids 0-6000
    num_actions: int = 8             # engagement types ranked (generative-recommenders' KuaiRand tasks: 8)
    embedding_dim: int = 256         # DLRMv3: hstu_embedding_table_dim
    d_model: int = 512               # DLRMv3: hstu_transducer_embedding_dim
    num_heads: int = 4               # DLRMv3: hstu_num_heads
    qk_dim: int = 128                # DLRMv3: hstu_attn_qk_dim (per head)
    v_dim: int = 128                 # DLRMv3: hstu_attn_linear_dim (per head)
    full_layers: int = 3             # seed paper 1: 14 layers, the later 11 over the last 1024 items
    truncated_layers: int = 11
    truncate_to: int = 1024
    max_seq_len: int = 8192          # the sweep's longest history
    num_time_buckets: int = 128      # generative-recommenders' default
    retrieval_k: int = 100


# generative-recommenders, generative_recommenders/dlrm_v3/configs.py (get_hstu_configs):
# 4 heads, attention linear and qk dims 128, embedding tables 256, transducer 512.
_DLRMV3 = "generative-recommenders DLRMv3 defaults (dlrm_v3/configs.py); layers and truncation: seed paper 1"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("hstu-tiny", "tiny",
               dict(embedding_dim=32, d_model=64, num_heads=2, qk_dim=16, v_dim=16, full_layers=2, truncated_layers=1,
                    truncate_to=32, max_seq_len=128, retrieval_k=10),
               source="CPU-sized HSTU with the paper's item and action vocabularies"),
        Preset("hstu-small", "small",
               dict(full_layers=3, truncated_layers=3, truncate_to=256, max_seq_len=2048),
               source=f"{_DLRMV3}; 6 layers, histories divided by 4"),
        Preset("hstu-paper", "paper", dict(), source=_DLRMV3),
    ]
}


def config(preset: Preset) -> HSTUConfig:
    return HSTUConfig(**preset.config)


class RelativeBias(nn.Module):
    """Learned bias by relative position (one entry per distance) and by log-bucketed time gap."""

    def __init__(self, max_seq_len: int, num_buckets: int):
        super().__init__()
        self.pos_w = nn.Parameter(torch.empty(max_seq_len).normal_(0, 0.02))
        self.ts_w = nn.Parameter(torch.empty(num_buckets + 1).normal_(0, 0.02))


class Projection(nn.Module):
    """x -> U, V, Q, K = split(SiLU(LN(x) W + b)), per head."""

    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.LayerNorm(cfg.d_model)
        self.uvqk = nn.Linear(cfg.d_model, cfg.num_heads * (2 * cfg.v_dim + 2 * cfg.qk_dim))

    def forward(self, x):
        c = self.cfg
        h = F.silu(self.uvqk(self.norm(x)))
        u, v, q, k = h.split([c.num_heads * c.v_dim] * 2 + [c.num_heads * c.qk_dim] * 2, dim=-1)
        T = x.shape[0]
        return u, v.view(T, c.num_heads, c.v_dim), q.view(T, c.num_heads, c.qk_dim), k.view(T, c.num_heads, c.qk_dim)


class Attention(nn.Module):
    """The jagged HSTU attention, run the way `implementation` says; it holds no weights."""

    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.alpha = cfg.qk_dim ** -0.5
        self.implementation = "eager"

    def forward(self, q, k, v, ts, jag: Jagged, bias: RelativeBias):
        return jagged_attention(q, k, v, ts, jag, bias.pos_w, bias.ts_w, alpha=self.alpha,
                                implementation=self.implementation, validate=False)


class Output(nn.Module):
    """y = x + W_o(U * LN(A V)), the norm taken per head."""

    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.v_dim)
        self.proj = nn.Linear(cfg.num_heads * cfg.v_dim, cfg.d_model)

    def forward(self, x, u, a):
        return x + self.proj(u * self.norm(a).flatten(1))


class HSTULayer(nn.Module):
    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.projection = Projection(cfg)
        self.bias = RelativeBias(cfg.max_seq_len, cfg.num_time_buckets)
        self.attention = Attention(cfg)
        self.output = Output(cfg)

    def forward(self, x, ts, jag: Jagged):
        u, v, q, k = self.projection(x)
        return self.output(x, u, self.attention(q, k, v, ts, jag, self.bias))


class Embedder(nn.Module):
    """Item and action embeddings, summed and projected to the model width."""

    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.items = nn.Embedding(cfg.num_items, cfg.embedding_dim)
        self.actions = nn.Embedding(cfg.num_actions + 1, cfg.embedding_dim)   # + the candidate's "not yet"
        self.proj = nn.Linear(cfg.embedding_dim, cfg.d_model)

    def forward(self, item_ids, actions):
        return self.proj(self.items(item_ids) + self.actions(actions))


class Heads(nn.Module):
    """Ranking logits per engagement type, and the top-k retrieved items, from each history's last output."""

    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.k = cfg.retrieval_k
        self.norm = nn.LayerNorm(cfg.d_model)
        self.ranking = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.num_actions))
        self.item_proj = nn.Linear(cfg.embedding_dim, cfg.d_model)

    def forward(self, last, item_table):
        h = self.norm(last)
        logits = self.ranking(h)
        scores = F.normalize(h, dim=-1) @ F.normalize(self.item_proj(item_table), dim=-1).T
        return logits, scores.topk(self.k, dim=-1).indices


class HSTU(nn.Module):
    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.config = cfg
        self.embed = Embedder(cfg)
        self.layers = nn.ModuleList(HSTULayer(cfg) for _ in range(cfg.full_layers + cfg.truncated_layers))
        self.heads = Heads(cfg)

    @property
    def attn_implementation(self) -> str:
        return self.layers[0].attention.implementation

    def set_attn_implementation(self, implementation: str) -> None:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown HSTU attention implementation {implementation!r}; known: {IMPLEMENTATIONS}")
        for layer in self.layers:
            layer.attention.implementation = implementation

    def hidden(self, item_ids, actions, timestamps, jag: Jagged, keep_index=None, kept: Jagged | None = None):
        """(T', D) outputs of the last layer, T' rows of the truncated histories."""
        x = self.embed(item_ids, actions)
        ts = timestamps
        for i, layer in enumerate(self.layers):
            if i == self.config.full_layers and kept is not None:
                x, ts, jag = x.index_select(0, keep_index), ts.index_select(0, keep_index), kept
            x = layer(x, ts, jag)
        return x, jag

    def forward(self, item_ids, actions, timestamps, jag: Jagged, keep_index=None, kept: Jagged | None = None):
        x, jag = self.hidden(item_ids, actions, timestamps, jag, keep_index, kept)
        last = x.index_select(0, jag.offsets[1:] - 1)
        return self.heads(last, self.embed.items.weight)


def check_lengths(cfg: HSTUConfig, lengths) -> None:
    if not lengths or min(lengths) < 1:
        raise ValueError(f"every history needs at least one item (the candidate), got lengths {list(lengths)}")
    if max(lengths) > cfg.max_seq_len:
        raise ValueError(f"a history of {max(lengths)} items exceeds the model's max_seq_len {cfg.max_seq_len}")


def build(preset: Preset, device, *, dtype: torch.dtype | None = None, checkpoint: str | None = None, seed: int = 0) -> HSTU:
    """Random weights (seeded) in eval mode; HSTU has no checkpoint format to load here."""
    if checkpoint is not None:
        raise ValueError(f"{preset.name}: HSTU builds from its config only; there is no checkpoint format to load "
                         f"{checkpoint!r}")
    dtype = dtype or default_dtype(device)
    torch.manual_seed(seed)
    with torch.device(device):
        model = HSTU(config(preset))
    return model.to(dtype).eval().requires_grad_(False)


def meta_model(preset: Preset) -> HSTU:
    with torch.device("meta"):
        return HSTU(config(preset))


__all__ = ["HSTU", "HSTUConfig", "PRESETS", "build", "check_lengths", "config", "meta_model"]
