"""An Imagen-like pixel cascade (DeepFloyd IF's stages I and II), text to a 64 px image and up
to 256 px by pixel-space diffusion (seed paper 2): T5 text encoding, guided denoising steps of
both stages' UNets; the attention ladder, then the lean cascade compiled, graph-replayed and
quantized."""
import pytest

WORKLOAD = "imagen"
LEVERS = ("eager", "sdpa", "compile", "cuda_graph", "quant")


def test_imagen(case, run_case):
    # A GPU runner may install the project without its dependencies: its cases are listed there,
    # and skip saying why.
    pytest.importorskip("diffusers", reason="imagen runs diffusers' UNets; install diffusers (pip install diffusers)")
    run_case(case)
