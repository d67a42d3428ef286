"""The operator breakdown (seed paper 2, Fig. 7): each op's time to the innermost module group
that ran it, the rest to elementwise or other; the GPU's idle time from the timed median."""
import torch
from torch import nn

from workloads.measure import operators
from workloads.run.assemble import _idle


class Attention(nn.Module):
    """Named as diffusers' block is: its projections are linear, the rest of it attention."""

    def __init__(self):
        super().__init__()
        self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), -1) @ x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.attn = nn.Conv2d(2, 2, 3, padding=1), nn.GroupNorm(1, 2), Attention()

    def forward(self, x):
        h = torch.nn.functional.silu(self.norm(self.conv(x)))
        return self.attn(h.flatten(2).transpose(1, 2).reshape(1, -1, 8))


GROUPS = {"convolution": ("Conv2d",), "attention": ("Attention",), "linear": ("Linear",), "norm": ("GroupNorm",)}


class Temporal(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()

    def forward(self, x):
        return self.attn(x)


def test_a_module_inside_a_named_outer_one_is_a_group_of_its_own():
    """"Temporal>Attention": an Attention inside a Temporal block is temporal attention; an
    Attention elsewhere stays attention (diffusers' temporal and spatial attention share a class)."""
    spatial, temporal = Attention(), Temporal()
    root = nn.ModuleDict({"spatial": spatial, "temporal": temporal})
    groups = {"temporal_attention": ("Temporal>Attention",), "attention": ("Attention",), "linear": ("Linear",)}
    x = torch.randn(1, 4, 8)
    out = operators.operator_ms(lambda: (spatial(x), temporal(x)), root, groups, "cpu")
    assert out["temporal_attention"] > 0 and out["attention"] > 0 and out["linear"] > 0
    only = operators.operator_ms(lambda: spatial(x), root, groups, "cpu")
    assert "temporal_attention" not in only and only["attention"] > 0


def test_each_op_goes_to_its_innermost_group_and_the_rest_to_elementwise_or_other():
    net, x = Net(), torch.randn(1, 2, 4, 8)
    out = operators.operator_ms(lambda: net(x), net, GROUPS, "cpu")
    assert {"convolution", "attention", "linear", "norm", "elementwise"} <= set(out) and "idle" not in out
    assert all(v > 0 for v in out.values())
    # The hooks are gone afterwards: a second profile of an unannotated run finds no groups.
    with torch.profiler.profile() as prof:
        net(x)
    assert set(operators.attribute(prof.events(), gpu=False)) <= {"elementwise", "other"}


def test_a_pipelines_networks_are_its_roots():
    class Pipe:
        components = {"unet": nn.Linear(2, 2), "scheduler": object(), "vae": nn.Conv2d(1, 1, 1)}

    assert [type(m).__name__ for m in operators.roots_of(Pipe())] == ["Linear", "Conv2d"]
    assert operators.roots_of(Net())[0].__class__ is Net


def test_idle_is_each_sides_timed_median_less_its_kernels():
    out = {"latency_ms": {"median": 100.0}, "reference_latency_ms": {"median": 300.0},
           "operators_ms": {"eager": {"attention": 200.0, "convolution": 50.0}, "lever": {"attention": 60.0}}}
    _idle(out, lever=True)
    assert out["operators_ms"]["eager"]["idle"] == 50.0 and out["operators_ms"]["lever"]["idle"] == 40.0
    alone = {"latency_ms": {"median": 260.0}, "operators_ms": {"eager": {"attention": 200.0, "convolution": 50.0}}}
    _idle(alone, lever=False)
    assert alone["operators_ms"]["eager"]["idle"] == 10.0


def test_on_a_gpu_kernels_no_op_launched_are_counted_as_unattributed():
    from types import SimpleNamespace as NS

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA

    def device(us):
        return NS(name="k", device_type=cuda, time_range=NS(elapsed_us=lambda: us))

    conv = NS(name="mmgen.op::convolution", device_type=cpu, cpu_parent=None, kernels=[], self_cpu_time_total=1.0)
    op = NS(name="aten::cudnn_convolution", device_type=cpu, cpu_parent=conv, self_cpu_time_total=1.0,
            kernels=[NS(name="sm90_xmma_fprop", duration=2000.0)])
    add = NS(name="aten::add", device_type=cpu, cpu_parent=None, self_cpu_time_total=1.0,
             kernels=[NS(name="vectorized_elementwise_kernel", duration=500.0)])
    # The conv's and the add's kernels, and 3 ms a graph replay ran with no op around it.
    # The group's record_function range is on the GPU's timeline too, around the conv's kernel:
    # a span, not time of its own.
    span = NS(name="mmgen.op::convolution", device_type=cuda, is_user_annotation=True,
              time_range=NS(elapsed_us=lambda: 2100.0))
    out = operators.attribute([conv, op, add, device(2000.0), device(500.0), device(3000.0), span], gpu=True)
    assert out == {"convolution": 2.0, "elementwise": 0.5, "unattributed": 3.0}
