"""sdpa: fused scaled-dot-product attention in place of the materialized softmax(QK^T)V."""
from .base import Lever

LEVER = Lever(
    "sdpa",
    "torch.nn.functional.scaled_dot_product_attention",
    apply=lambda plan, ctx: plan.with_(attn_implementation="sdpa"),
)
