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


def test_tally_counts_host_waits_apart_from_launches_and_kernels():
    cuda, cpu = mc.torch.autograd.DeviceType.CUDA, mc.torch.autograd.DeviceType.CPU
    step = [("cudaLaunchKernel", cpu, 3.0), ("ampere_sgemm_128x64", cuda, 40.0),
            ("cudaGraphLaunch", cpu, 5.0), ("aten::mm", cpu, 9.0)]
    waits = [("cudaStreamSynchronize", cpu, 50.0), ("cudaDeviceSynchronize", cpu, 20.0),
             ("cudaEventSynchronize", cpu, 1.0), ("cudaMemcpyAsync", cpu, 2.0)]
    lean, waiting = mc.tally(step), mc.tally(step + waits)
    assert (lean["kernels"], lean["launches"], lean["syncs"]) == (1, 2, 0)
    assert (waiting["kernels"], waiting["launches"], waiting["syncs"]) == (1, 2, 3)
    assert waiting["gpu_ms"] == 0.04 and waiting["names"] == Counter({"ampere_sgemm_128x64": 1})
    # Per step, a wait in every step shows as one more a step; what runs once cancels.
    assert mc.tally(step * 12 + waits[:1] * 12)["syncs"] - mc.tally(step * 4 + waits[:1] * 4)["syncs"] == 8
