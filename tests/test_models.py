"""Model presets: published sizes, builds, and local checkpoints."""
import json

import numpy as np
import pytest
import torch

from workloads.models import llama
from workloads.models.common import CheckpointError, check_checkpoint_dir, kv_bytes_per_token, parameter_count


@pytest.mark.parametrize("name", [n for n, p in llama.PRESETS.items() if p.published_params])
def test_paper_presets_match_published_parameter_counts(name):
    preset = llama.PRESETS[name]
    count = parameter_count(llama.meta_model(preset))
    assert count == pytest.approx(preset.published_params, rel=0.01), f"{name}: {count / 1e9:.3f}B"


def test_every_scale_has_a_preset():
    assert {p.scale for p in llama.PRESETS.values()} == {"tiny", "small", "paper"}


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
