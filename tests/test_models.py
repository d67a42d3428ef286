"""Model presets: published sizes, builds, and local checkpoints."""
import json

import numpy as np
import pytest
import torch

from workloads.models import hstu, llama
from workloads.models.common import CheckpointError, check_checkpoint_dir, kv_bytes_per_token, parameter_count


@pytest.mark.parametrize("name", [n for n, p in llama.PRESETS.items() if p.published_params])
def test_paper_presets_match_published_parameter_counts(name):
    preset = llama.PRESETS[name]
    count = parameter_count(llama.meta_model(preset))
    assert count == pytest.approx(preset.published_params, rel=0.01), f"{name}: {count / 1e9:.3f}B"


def _hstu_parameters(c: hstu.HSTUConfig) -> int:
    """HSTU's parameters from its equations, term by term (no parameter count is published for
    the paper's configuration, so the test checks the model against the cited config's formula)."""
    d, e, h = c.d_model, c.embedding_dim, c.num_heads
    uvqk = h * (2 * c.v_dim + 2 * c.qk_dim)
    layer = (2 * d                               # LN(x)
             + d * uvqk + uvqk                   # W_uvqk, bias
             + c.max_seq_len + c.num_time_buckets + 1   # position and time bias
             + 2 * c.v_dim                       # LN(AV), per head
             + h * c.v_dim * d + d)              # W_o, bias
    embed = c.num_items * e + (c.num_actions + 1) * e + e * d + d
    heads = 2 * d + (d * d + d) + (d * c.num_actions + c.num_actions) + (e * d + d)
    return embed + (c.full_layers + c.truncated_layers) * layer + heads


def test_hstu_paper_preset_matches_its_config_formula():
    preset = hstu.PRESETS["hstu-paper"]
    c = hstu.config(preset)
    assert (c.num_heads, c.qk_dim, c.v_dim, c.d_model, c.embedding_dim) == (4, 128, 128, 512, 256)   # DLRMv3 defaults
    assert (c.full_layers + c.truncated_layers, c.truncated_layers, c.truncate_to, c.num_items) == (14, 11, 1024, 6001)
    assert parameter_count(hstu.meta_model(preset)) == _hstu_parameters(c)


@pytest.mark.parametrize("family", [llama, hstu])
def test_every_scale_has_a_preset(family):
    assert {p.scale for p in family.PRESETS.values()} == {"tiny", "small", "paper"}


def test_kv_bytes_follow_grouped_query_attention():
    cfg7, cfg34 = llama.config(llama.PRESETS["llama-7b"]), llama.config(llama.PRESETS["llama-34b"])
    assert kv_bytes_per_token(cfg7, torch.bfloat16) == 2 * 32 * 4096 * 2        # 0.5 MiB, full MHA
    assert kv_bytes_per_token(cfg34, torch.bfloat16) == 2 * 48 * 8 * 128 * 2     # 8 KV heads


def test_tiny_build_is_seeded_and_never_stops_early(device):
    a = llama.build(llama.PRESETS["llama-tiny"], device, dtype=torch.float32, seed=5)
    b = llama.build(llama.PRESETS["llama-tiny"], device, dtype=torch.float32, seed=5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert a.generation_config.eos_token_id is None and not a.training


def test_local_checkpoint_loads_the_same_weights(tmp_path, device):
    src = llama.build(llama.PRESETS["llama-tiny"], "cpu", dtype=torch.float32, seed=3)
    src.save_pretrained(tmp_path)
    loaded = llama.build(llama.PRESETS["llama-tiny"], device, dtype=torch.float32, checkpoint=str(tmp_path))
    ids = torch.from_numpy(np.random.default_rng(0).integers(3, 32000, (1, 12))).to(device)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, src.to(device)(ids).logits)


def test_bad_checkpoint_directories_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="is not a directory"):
        check_checkpoint_dir(tmp_path / "nope", "llama")
    with pytest.raises(CheckpointError, match="has no config.json"):
        check_checkpoint_dir(tmp_path, "llama")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "chameleon"}))
    with pytest.raises(CheckpointError, match="model_type is 'chameleon', expected 'llama'"):
        check_checkpoint_dir(tmp_path, "llama")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        check_checkpoint_dir(tmp_path, "llama")
