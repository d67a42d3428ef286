"""T-T inputs: lengths follow the paper's Table II, seeded, left-padded."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workloads.tasks import text
from workloads.tasks.lengths import LengthDist


@pytest.mark.parametrize("dist", [d.prompt for d in text.DATASETS.values()] + [d.output for d in text.DATASETS.values()],
                         ids=lambda d: d.source)
def test_draws_reproduce_the_published_min_mean_max(dist):
    x = dist.draw(50_000, np.random.default_rng(0))
    assert x.min() >= dist.lo and x.max() <= dist.hi
    assert x.mean() == pytest.approx(dist.mean, rel=0.03)


def test_a_distribution_with_its_mean_outside_the_range_is_refused():
    with pytest.raises(ValueError, match="outside"):
        LengthDist(10, 20, 30, "bad")


@given(batch=st.integers(1, 8), scale=st.sampled_from(["tiny", "small", "paper"]))
def test_batches_are_seeded_left_padded_and_capped(batch, scale):
    a = text.make_batch(text.HUMANEVAL, scale, batch, vocab_size=32016, device="cpu")
    b = text.make_batch(text.HUMANEVAL, scale, batch, vocab_size=32016, device="cpu")
    assert a.input_ids.equal(b.input_ids) and a.new_tokens == b.new_tokens
    assert 1 <= a.new_tokens <= text.DECODE_CAP[scale]
    assert a.attention_mask.sum(-1).tolist() == a.prompt_lengths
    for row, n in zip(a.attention_mask, a.prompt_lengths):
        assert row[a.padded_length - n:].all() and not row[: a.padded_length - n].any()
    assert (a.input_ids[a.attention_mask.bool()] >= 3).all()
    assert all(text.HUMANEVAL.prompt.lo <= n <= text.HUMANEVAL.prompt.hi for n in a.prompt_lengths)


def test_a_prompt_longer_than_the_context_names_the_limit():
    with pytest.raises(ValueError, match="exceeds the model's context of 256"):
        text.make_batch(text.HUMANEVAL, "paper", 4, vocab_size=32016, device="cpu", max_positions=256)
