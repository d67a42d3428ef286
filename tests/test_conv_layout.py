"""1-D convolutions as channels-last 2-D ones: the same function, a copy of the module."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from workloads.engine.conv_layout import Conv1dAsConv2d, conv1d_as_channels_last_2d


@st.composite
def convs(draw):
    groups = draw(st.sampled_from([1, 2, 4]))
    conv = nn.Conv1d(groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)),
                     kernel_size=draw(st.integers(1, 7)), stride=draw(st.integers(1, 3)),
                     padding=draw(st.integers(0, 4)), dilation=draw(st.integers(1, 3)), groups=groups,
                     bias=draw(st.booleans()))
    return conv, draw(st.integers(0, 2**16))


@settings(deadline=None)
@given(convs(), st.integers(1, 3), st.integers(0, 40))
def test_a_converted_convolution_computes_the_same(conv_seed, batch, extra):
    conv, seed = conv_seed
    torch.manual_seed(seed)
    shortest = max(1, conv.dilation[0] * (conv.kernel_size[0] - 1) + 1 - 2 * conv.padding[0])   # one output
    x = torch.randn(batch, conv.in_channels, shortest + extra)
    torch.testing.assert_close(Conv1dAsConv2d(conv)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_a_stack_is_copied_with_every_plain_conv1d_swapped():
    stack = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.LeakyReLU(),
                          nn.Sequential(nn.Conv1d(8, 8, 5, dilation=2, padding=4), nn.ConvTranspose1d(8, 4, 4, stride=2)),
                          nn.Conv1d(4, 4, 3, padding=1, padding_mode="reflect"))
    converted = conv1d_as_channels_last_2d(stack)
    assert [type(m).__name__ for m in converted.modules()].count("Conv1dAsConv2d") == 2
    assert type(converted[3]) is nn.Conv1d                       # reflect padding stays 1-D
    assert isinstance(converted[2][1], nn.ConvTranspose1d)       # not a Conv1d: left as it is
    assert sum(type(m) is nn.Conv1d for m in stack.modules()) == 3   # the original is untouched
    x = torch.randn(2, 4, 33)
    torch.testing.assert_close(converted(x), stack(x), atol=1e-5, rtol=1e-5)
    weight_normed = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 3))
    assert conv1d_as_channels_last_2d(weight_normed).__class__ is weight_normed.__class__   # another type: kept
