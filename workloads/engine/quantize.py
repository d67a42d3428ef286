"""Dynamic quantization of a network's linear layers with torchao, for engines that run a copy
of the network (levers/quant.py)."""
from __future__ import annotations

import torch

# float8 matmuls: Ada (8.9) and Hopper (9.0) on.
FLOAT8_CAPABILITY = (8, 9)


def scheme(device: torch.device) -> str:
    """What a device runs best: float8 where it has float8 matmuls, else int8."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= FLOAT8_CAPABILITY:
        return "float8"
    return "int8"


def config(name: str):
    """torchao's configuration for a scheme: dynamic activation scales, per-channel weights."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8DynamicActivationInt8WeightConfig

    known = {"int8": Int8DynamicActivationInt8WeightConfig, "float8": Float8DynamicActivationFloat8WeightConfig}
    if name not in known:
        raise ValueError(f"unknown quantization scheme {name!r}; known: {sorted(known)}")
    return known[name]()


def quantize_linears(module: torch.nn.Module, device, skip: tuple[str, ...] = ()) -> str:
    """`module`'s nn.Linear layers quantized in place with the device's scheme, but those whose
    qualified names start with one of `skip`; the scheme."""
    from torchao.quantization import quantize_

    def chosen(m, fqn: str) -> bool:
        return isinstance(m, torch.nn.Linear) and not any(fqn == s or fqn.startswith(s + ".") for s in skip)

    name = scheme(device)
    quantize_(module, config(name), filter_fn=chosen)
    return name
