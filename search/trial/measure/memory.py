"""Peak memory of one inference at batch 1: the weights plus the largest set of activations
alive at the same time.

Measured, not modelled: the float model runs once in eager PyTorch under a dispatch mode
that sees every tensor an operator creates and when the last reference to its storage goes,
so views, in-place operators and the tensors a residual branch keeps alive are counted as
they are. Weights and buffers are counted as the deployed model holds them in memory: conv and
linear weights at 1 byte a value when the model runs on int8 kernels (below 8 bits too, since
those run on the same kernels), everything else at its own element size; unstructured
sparsity is not exploited by dense kernels, so it saves nothing here. Activations of an int8
model are counted at 1 byte a value. Allocator slack, the runtime's own workspace and the
input's copy by the caller are not included: this is the model's working set, the figure that
decides whether it fits a device's RAM.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tradeoff.search.trial.figures import Figure, register_figure
from tradeoff.search.trial.measure.probe import Probe

MEMORY_METHOD = (
    "weights as held in memory + peak of live activation tensors in one batch-1 forward of the float "
    "model (eager PyTorch, traced by a dispatch mode)"
)


class _LiveTensors(TorchDispatchMode):
    """Bytes of the tensor storages that operators create and that are still referenced."""

    def __init__(self, known: set[int]):
        super().__init__()
        self.known = known  # storages that are not activations (weights, buffers)
        self.storages: dict[int, list[int]] = {}  # data pointer -> [bytes, live tensors on it]
        self.live = self.peak = 0

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self.known:
            return
        entry = self.storages.get(key)
        if entry is None:
            entry = self.storages[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


@torch.no_grad()
def peak_activation_bytes(model: nn.Module, example_input: torch.Tensor) -> int:
    """The largest number of bytes of activations (the input included) alive at once during
    one forward pass of ``model`` on ``example_input``."""
    known = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    x = example_input.detach().clone()
    mode = _LiveTensors(known)
    mode.track(x)
    with mode:
        out = model.eval()(x)
    del out
    return mode.peak


def weight_bytes(model: nn.Module, *, weight_bits: int = 32, layer_bits: dict[str, int] | None = None) -> int:
    """Bytes of the parameters and buffers as the deployed model holds them: conv and linear
    weights at 1 byte a value on int8 kernels (``weight_bits`` <= 8; per layer with
    ``layer_bits``), the rest as they are."""
    int8 = set()
    if weight_bits <= 8:
        int8 = {
            id(m.weight)
            for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d))
            and (layer_bits or {}).get(n, weight_bits) <= 8
        }
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return int(sum(t.numel() * (1 if key in int8 else t.element_size()) for key, t in tensors.items()))


def peak_memory_bytes(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    weight_bits: int = 32,
    layer_bits: dict[str, int] | None = None,
) -> int:
    activations = peak_activation_bytes(model, example_input)
    if weight_bits <= 8:
        activations //= 4  # float32 values held as 8-bit
    return weight_bytes(model, weight_bits=weight_bits, layer_bits=layer_bits) + activations


def _measure(probe: Probe) -> tuple[int, dict]:
    value = peak_memory_bytes(
        probe.float_model, probe.cpu_example, weight_bits=probe.weight_bits, layer_bits=probe.layer_bits
    )
    method = MEMORY_METHOD + (
        "; int8 kernels: weights and activations at 1 byte a value" if probe.weight_bits <= 8 else ""
    )
    return value, {"memory_method": method}


register_figure(
    Figure(
        needs_training=False,
        name="peak_memory_bytes",
        unit="bytes",
        direction="minimize",
        label="peak memory (MB)",
        short="memory",
        measure=_measure,
        method=MEMORY_METHOD,
        weight="memory",
        constraint="max_memory_mb",
        constraint_unit=" MB",
        constraint_scale=1e6,
        scale=1e-6,
        details=("memory_method",),
        integer=True,
    )
)
