"""eager: the reference exactly as users run it (library generate, eager attention, dynamic cache)."""
from .base import Lever

LEVER = Lever(
    "eager",
    "the library's generate with eager attention and a dynamic KV cache",
    apply=lambda plan, ctx: plan.with_(attn_implementation="eager", engine="library"),
)
