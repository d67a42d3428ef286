"""Code Llama, text-to-text code completion (seed paper 1, Section IV-A): the lever ladder."""

from workloads.gate.targets import HOPPER

WORKLOAD = "llama"
LEVERS = ("eager", "sdpa", "compile", "cuda_graph")

# Targets, not measurements: a case must reach them on the named device class whatever its
# stored baseline says.
REQUIREMENTS = [
    dict(case="llama-7b/T-T/cuda_graph/paper/bs1", device_class=HOPPER,
         max_tpot_ms=5.6, min_roofline=0.80, min_speedup=4.0,
         why="CodeLlama-7B decode at >= 80% of the HBM roofline and >= 4x over eager on an H100"),
]


def test_llama(case, run_case):
    run_case(case)
