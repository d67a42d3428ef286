"""kv_reorder: beam search reorders the self-attention cache in place, the cross-attention cache not at all.

transformers gathers every layer's self- and cross-attention cache with `index_select` after
each beam step (new tensors, so no fixed addresses for a compiled step). In place, the cache
keeps its address, the gather is one compiled kernel over all layers, and the cross-attention
cache (identical rows within a beam group) is left alone. Seed paper 1, Section IV-A, Table V.
"""
from .base import Lever


def _why_not(ctx):
    if "beam_search" not in ctx.supports:
        return "the workload decodes without beam search: there is no cache reorder"
    return None


LEVER = Lever(
    "kv_reorder",
    "in-place, compiled beam reorder of the self-attention cache; cross-attention cache not reordered",
    apply=lambda plan, ctx: plan.with_(engine="static").with_extras(kv_reorder=True),
    why_not=_why_not,
)
