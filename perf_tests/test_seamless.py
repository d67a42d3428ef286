"""SeamlessM4T v2, speech and text translation (seed paper 1, Section IV-A deep dive, Table V)."""

from workloads.gate.targets import H100, H200

WORKLOAD = "seamless"
# The paper's ladder (each rung on top of the last), one rung beyond it (vocoder_conv2d), and SDPA
# alone: the paper's point that fused attention does not help a model whose time goes to launches
# and cache reorders.
LEVERS = ("eager", "sdpa", "compile", "cuda_graph", "kv_reorder", "vocoder_compile", "vocoder_cuda_graph",
          "vocoder_conv2d")

# Targets, not measurements: the bars at paper scale, ratios of one rung to eager on one
# device, declared for the H100 and the H200 alike.
REQUIREMENTS = [
    dict(case="seamless-large/S-S/vocoder_cuda_graph/paper/bs1", device_class=(H100, H200), min_speedup=4.0,
         min_module_speedup={"vocoder": 10.0},
         why="S-S end to end >= 4x over eager at batch 1 (the paper: 2.7x on an A100), vocoder >= 10x"),
    dict(case="seamless-large/S-S/cuda_graph/paper/bs1", device_class=(H100, H200),
         min_module_speedup={"text_decoder": 2.0},
         why="text decoder with compile + CUDA graph >= 2x its eager time (the paper: 2x)"),
]


def test_seamless(case, run_case):
    run_case(case)
