"""Hypothesis profiles and shared fixtures for the correctness and harness tests."""
import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels are tested under Triton's interpreter (the same source run with
# NumPy). Triton fixes the mode when it is first imported, which the workloads' imports do.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from hypothesis import HealthCheck, settings

# Every new input shape is a torch.compile recompile (seconds on a CPU): few examples, no deadline.
settings.register_profile("ci", max_examples=8, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config, items):
    # The GPU's own run (`--device cuda`, asked for by name) checks what the device changes: a
    # test that never asks for the device runs the same on any machine, and the CPU run checks it.
    if config.getoption("--device") != "cuda":
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and "device" not in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason="device-independent: `pytest tests` on the CPU checks it"))


@pytest.fixture(scope="session")
def device(request):
    return request.config._mmgen["device"]


@pytest.fixture(scope="session")
def tiny_llama(device):
    """The tiny preset in fp32 (also on a GPU): the paths must agree token for token."""
    from workloads.models import llama

    return llama.build(llama.PRESETS["llama-tiny"], device, dtype=torch.float32)
