"""Chameleon: image captioning (I-T), visual question answering (IT-T) and text-to-image (T-I)
with classifier-free guidance (seed paper 1, Section III): the lever ladder per task."""

from workloads.gate.targets import H100, H200

WORKLOAD = "chameleon"
LEVERS = ("eager", "sdpa", "compile", "cuda_graph")

# Targets, not measurements: the bars at paper scale, ratios of one rung to eager on one
# device, declared for the H100 and the H200 alike.
REQUIREMENTS = [
    dict(case="chameleon-7b/T-I/cuda_graph/paper/bs1", device_class=(H100, H200),
         min_module_speedup={"decode": 4.0},
         why="T-I decode phase (1024 guided steps, three rows each) >= 4x over eager with CUDA graphs"),
]


def test_chameleon(case, run_case):
    run_case(case)
