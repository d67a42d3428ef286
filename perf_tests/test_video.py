"""Make-A-Video-like text to video by latent diffusion (seed paper 2, Sec. VI), as ModelScope's
text-to-video model: CLIP text encoding, guided denoising steps of the UNet3D over every frame,
the autoencoder's decode of every frame; the attention ladder, then the lean loop compiled,
graph-replayed and quantized."""
import pytest

WORKLOAD = "video"
LEVERS = ("eager", "sdpa", "compile", "cuda_graph", "quant")


def test_video(case, run_case):
    # A GPU runner may install the project without its dependencies: its cases are listed there,
    # and skip saying why.
    pytest.importorskip("diffusers", reason="video runs diffusers' UNet3D; install diffusers (pip install diffusers)")
    run_case(case)
