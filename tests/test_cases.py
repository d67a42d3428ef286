"""Case ids, lever stacks and their applicability, and the matrix a workload expands into."""
import pytest
import torch

from workloads.cases import matrix, resolve_scale
from workloads.levers import LADDER, Context, UnknownLever, plan_for, stack
from workloads.registry import WORKLOADS

CPU = torch.device("cpu")


def test_a_rung_means_the_ladder_up_to_it():
    assert stack("cuda_graph") == LADDER
    assert stack("sdpa+compile") == ("eager", "sdpa", "compile")
    with pytest.raises(UnknownLever, match="'turbo'.*known"):
        stack("sdpa+turbo")


def test_plans_accumulate_in_order():
    ctx = Context(torch.device("cuda"), WORKLOADS["llama"].supports)
    plan, reason = plan_for("cuda_graph", ctx)
    assert reason is None
    assert (plan.attn_implementation, plan.engine, plan.compile, plan.cuda_graph) == ("sdpa", "static", True, True)
    assert plan_for("eager", ctx)[0].engine == "library"


def test_cuda_graph_does_not_apply_on_the_cpu_and_says_why():
    plan, reason = plan_for("cuda_graph", Context(CPU, WORKLOADS["llama"].supports))
    assert plan is None and "CUDA" in reason
    plan, reason = plan_for("compile", Context(CPU, frozenset()))
    assert plan is None and "static-cache" in reason


def test_matrix_ids_batches_and_marks():
    cases = matrix("llama", LADDER, "paper")
    ids = [c.id for c in cases]
    assert "llama-7b/T-T/cuda_graph/paper/bs1" in ids
    batches = {c.batch for c in cases if c.model == "llama-7b"}
    assert len(batches) == 2 and 1 in batches
    by_id = {c.id: c for c in cases}
    assert {"gpu", "pr"} <= set(by_id["llama-7b/T-T/cuda_graph/paper/bs1"].marks)
    assert all("large" in c.marks for c in cases if c.model == "llama-34b")
    tiny = matrix("llama", LADDER, "tiny")
    assert {c.batch for c in tiny} == {1, WORKLOADS["llama"].table_iii_batch}
    assert [c.lever for c in tiny if "gpu" in c.marks] == ["cuda_graph", "cuda_graph"]


def test_max_batch_fits_the_memory_model():
    wl = WORKLOADS["llama"]
    for name in ("llama-7b", "llama-1b"):
        b = wl.max_batch(wl.preset(name), "T-T")
        assert 8 <= b <= wl.tasks["T-T"].samples and b % 8 == 0


def test_auto_scale():
    assert resolve_scale("auto", CPU) == "tiny"
    assert resolve_scale("auto", torch.device("cuda")) == "paper"
    assert resolve_scale("small", CPU) == "small"
