"""Kernels by name per decode step: what a changed kernel count is made of."""
from collections import Counter

from workloads.measure import counters as mc


def test_names_per_step_cancel_what_runs_once():
    four = Counter({"prefill_gemm": 3, "step_gemm": 8, "step_softmax": 4})
    twelve = Counter({"prefill_gemm": 3, "step_gemm": 24, "step_softmax": 12, "late": 8})
    assert mc.names_per_step(four, twelve, 8) == {"late": 1.0, "step_gemm": 2.0, "step_softmax": 1.0}


def test_long_template_names_are_cut_to_a_stored_width():
    name = "void cutlass::Kernel2<" + "x" * 500 + ">"
    short = mc.kernel_name(name)
    assert len(short) == 100 and short.startswith("void cutlass::Kernel2<") and short.endswith("...")
    assert mc.kernel_name("triton_poi_fused_add_0") == "triton_poi_fused_add_0"
