"""Hypothesis profiles and shared fixtures for the correctness and harness tests."""
import os

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


@pytest.fixture(scope="session")
def device(request):
    return request.config._mmgen["device"]


@pytest.fixture(scope="session")
def tiny_llama(device):
    """The tiny preset in fp32 (also on a GPU): the paths must agree token for token."""
    from workloads.models import llama

    return llama.build(llama.PRESETS["llama-tiny"], device, dtype=torch.float32)
