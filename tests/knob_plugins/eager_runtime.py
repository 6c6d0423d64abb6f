"""A runtime defined outside tradeoff, in one file: PyTorch's eager mode, as it is.

``tradeoff search --plugin eager_runtime --runtime eager`` imports this module (the study stores
its name, so workers and `export` import it too); ``register_runtime`` makes it selectable, and
every latency of the study is timed through ``deploy``'s model. It runs float models only, and
export writes TorchScript (no pickle).
"""

from __future__ import annotations

import os

import torch

from tradeoff.spaces import PlanError
from tradeoff.spaces.runtimes import Runtime, register_runtime

CALLS = {"deploy": 0}


class Eager(torch.nn.Module):
    """The model itself, marked so that a test can see it was what ran."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, x):
        return self.model(x)


@register_runtime
class EagerRuntime(Runtime):
    name = "eager"
    distribution = "torch"
    file = "model.pt"

    def deploy(self, model, example_input):
        CALLS["deploy"] += 1
        return model if isinstance(model, Eager) else Eager(model)

    def quantize(self, model, bits, ctx, skipped):
        raise PlanError("the eager runtime runs float models only; fix weight_bits=32")

    def describe(self, deployed, device):
        return f"PyTorch eager (test plug-in), {torch.get_num_threads()} threads"

    def write(self, deployed, model, example_input, test_x, folder):
        traced = torch.jit.trace(deployed.model, example_input, check_trace=False)
        torch.jit.save(traced, os.path.join(folder, self.file))
        return {self.file: {"format": "TorchScript (traced) of the eager model; torch.jit.load"}}, {
            "written": False,
            "reason": "the eager runtime writes no ONNX file",
        }

    def read(self, path):
        return torch.jit.load(path, map_location="cpu").eval()
