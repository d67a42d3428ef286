"""Stable Diffusion 1.5, text to image by latent diffusion (seed paper 2): CLIP text encoding,
guided denoising steps of the UNet, the autoencoder's decode; the attention ladder."""
import pytest

WORKLOAD = "sd15"
LEVERS = ("eager", "sdpa", "compile", "cuda_graph", "quant")


def test_sd15(case, run_case):
    # A GPU runner may install the project without its dependencies: its cases are listed there,
    # and skip saying why.
    pytest.importorskip("diffusers", reason="sd15 runs diffusers' pipeline; install diffusers (pip install diffusers)")
    run_case(case)
