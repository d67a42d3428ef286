"""Stable Diffusion's image-size sweep (seed paper 2, Figs. 9 and 10): its cases, the attention
score memory against the paper's O(L^4) formula, and a step's arithmetic intensity (Fig. 5)."""
import pytest
import torch

from workloads.levers import Context, plan_for
from workloads.models import sd15
from workloads.models.diffusion import largest_scores, meta_unet_flops
from workloads.suites import WORKLOADS
from workloads.suites.matrix import matrix
from workloads.tasks import text_to_image

from .test_sd15 import _run, tiny  # noqa: F401 (a fixture)

pytest.importorskip("diffusers", reason="sd15 runs diffusers' pipeline; install diffusers (pip install diffusers)")

CPU = torch.device("cpu")
WL = WORKLOADS["sd15"]


# -- the image-size sweep (seed paper 2, Figs. 9 and 10) -------------------------------------
def _paper_unet_bf16():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(dict(sd15.PRESETS["sd15"].config["unet"])).to(torch.bfloat16)


def test_the_score_tensor_is_the_papers_formula_and_grows_with_the_fourth_power_of_the_latent_side():
    """The largest score tensor of a step is the first level's self-attention over the whole
    latent: 2 rows (guidance) x 8 heads x (H x W)^2, in bf16 on a GPU. 512 MiB at 512 x 512;
    twice the side, 16 times the bytes (the O(L^4) claim)."""
    unet = _paper_unet_bf16()
    top = largest_scores(unet, (64, 64), context=77, rows=2)
    assert top == {"rows": 2, "heads": 8, "query": 4096, "key": 4096, "elements": 2 * 8 * 4096 * 4096}
    by_size = {n: largest_scores(unet, (n // 8, n // 8), context=77, rows=2)["elements"]
               for n in text_to_image.SIZE_SWEEP["paper"]}
    assert all(by_size[n] == by_size[512] * (n / 512) ** 4 for n in by_size)
    assert largest_scores(unet, (64, 64), context=77, rows=4)["elements"] == 2 * top["elements"]
    # What the case records: the formula's bytes in the UNet's dtype.
    from workloads.engine.denoising import score_record

    b = text_to_image.batch_from_lengths([12], vocab_size=49408, context=77, latent_channels=4, factor=8,
                                         height=1024, width=1024, steps=2, evaluations=3)
    rec = score_record(unet, b)
    assert rec["formula_bytes"] == 2 * 8 * 16384**2 * 2 == 8 * 2**30 and rec["latent"] == [128, 128]


def test_a_sweep_case_records_the_score_formula_and_its_steps_arithmetic_intensity(tiny):
    b = WL.inputs("T-I-32px", "tiny", 1, tiny, CPU)
    assert (b.height, b.steps, b.new_tokens) == (32, 2, 3)
    rec = _run(tiny, b, "eager").recorded()
    assert rec["attention_scores"] == {"rows": 2, "heads": 8, "query": 16, "key": 16, "elements": 2 * 8 * 16 * 16,
                                       "image": [32, 32], "latent": [4, 4], "dtype_bytes": 4, "formula_bytes": 2 * 8 * 16 * 16 * 4}
    # Arithmetic intensity: one UNet evaluation's FLOPs over its weights' bytes (seed paper 2, Fig. 5).
    flops = meta_unet_flops(tiny.unet, (4, 4), context=77, rows=2)
    weights = sum(p.numel() * 4 for p in tiny.unet.parameters())
    assert WL.step_flops(tiny, b) == flops and WL.decode_bytes(tiny, b) == weights


def test_what_materializing_the_scores_costs_is_measured_on_the_rung_that_changes_attention_alone():
    """eager's peak less sdpa's, where both are the GPU allocator's; no figure on a rung that
    changes more than attention (its difference is not the scores'), on eager, or from the
    CPU's process-wide high-water marks."""
    from workloads.case import Case
    from workloads.run.assemble import Rung, _score_memory

    formula = {"formula_bytes": 2**29}
    gpu = {"peak_memory": {"kind": "cuda_allocated", "peak_mb": 3000.0},
           "reference_peak_memory": {"kind": "cuda_allocated", "peak_mb": 4100.5}}
    ctx = Context(torch.device("cuda"), WL.supports_for("T-I-512px"), tuning=True)

    def measured(lever, peaks, variant=object()):
        rung = Rung(Case("sd15", "sd15", "T-I-512px", lever, "paper", 1), plan_for(lever, ctx, WL.ladder)[0],
                    None, {}, variant)
        return _score_memory(formula, rung, peaks).get("measured_bytes")

    assert measured("sdpa", gpu) == 1100.5 * 2**20
    assert measured("compile", gpu) is None and measured("eager", gpu, variant=None) is None
    cpu = {k: {"kind": "process_rss", "peak_mb": v["peak_mb"]} for k, v in gpu.items()}
    assert measured("sdpa", cpu) is None


def test_the_published_unets_step_is_compute_bound():
    """Seed paper 2, Fig. 5: at 512 x 512 a step does about 935 FLOPs a byte of bf16 weights, far
    right of an A100's or H100's ridge (about 150 and 300 FLOP/B)."""
    from types import SimpleNamespace

    unet = _paper_unet_bf16()
    b = text_to_image.batch_from_lengths([12], vocab_size=49408, context=77, latent_channels=4, factor=8,
                                         height=512, width=512, steps=2, evaluations=3)
    pipe = SimpleNamespace(unet=unet)
    intensity = WL.step_flops(pipe, b) / WL.decode_bytes(pipe, b)
    assert intensity == pytest.approx(1.6065e12 / (sd15.PUBLISHED["unet"] * 2), rel=1e-3)
    assert 900 < intensity < 950


def test_the_sweep_runs_one_pipeline_at_fixed_sizes_before_and_after_flash_attention():
    for scale, sizes in text_to_image.SIZE_SWEEP.items():
        cases = [c for c in matrix("sd15", ("eager", "sdpa", "compile", "cuda_graph", "quant"), scale)
                 if c.task != "T-I"]
        # eager and sdpa at batch 1 only: no case listed only to skip
        assert [(c.task, c.lever, c.batch) for c in cases] == [(f"T-I-{n}px", lv, 1) for n in sizes
                                                               for lv in ("eager", "sdpa")]
        assert all("pr" not in c.marks for c in cases)
        for n in sizes:
            t = text_to_image.TASKS[f"T-I-{n}px"]
            assert t.image_size[scale] == n and n % 8 == 0 and t.steps[scale] >= 2 and t.sweep
    assert text_to_image.SIZE_SWEEP["paper"] == (64, 128, 256, 512, 768, 1024)
    with pytest.raises(ValueError, match="T-I-1024px has no image size at tiny scale"):
        text_to_image.make_batch("T-I-1024px", "tiny", 1, evaluations_of=lambda s: s + 1, vocab_size=1000,
                                 context=77, latent_channels=4, factor=8)
