"""Stable Diffusion 1.5, text to image by latent diffusion (seed paper 2): CLIP text encoding,
guided denoising steps of the UNet, the autoencoder's decode; the attention ladder."""

WORKLOAD = "sd15"
LEVERS = ("eager", "sdpa")


def test_sd15(case, run_case):
    run_case(case)
