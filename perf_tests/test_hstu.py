"""HSTU generative recommender, H-A ranking and retrieval over jagged histories (seed paper 1,
Section V): the attention ladder, at the Table II lengths and over the 1K-8K sweep."""

from workloads.gate.targets import H100, H200

WORKLOAD = "hstu"
LEVERS = ("eager", "memory_efficient", "fused", "compile", "cuda_graph")

# Targets, not measurements: the bars at paper scale, ratios of one rung to eager on one
# device, declared for the H100 and the H200 alike.
REQUIREMENTS = [
    dict(case="hstu-paper/H-A-8K/fused/paper/bs32", device_class=(H100, H200), min_module_speedup={"attention": 10.0},
         why="fused attention >= 10x the materialized attention at max batch and 8K (the paper: 15x on an A100)"),
    dict(case="hstu-paper/H-A/fused/paper/bs1", device_class=(H100, H200), min_module_speedup={"attention": 2.0},
         why="fused attention >= 2x the materialized attention at batch 1 (the paper: 2.11x on an A100)"),
]


def test_hstu(case, run_case):
    run_case(case)
