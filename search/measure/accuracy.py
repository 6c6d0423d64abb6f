"""Top-1 accuracy on the validation split, on the deployed model."""

from __future__ import annotations

import torch
from torch import nn

from tradeoff.search.figures import Figure, Tolerance, register_figure
from tradeoff.search.measure.probe import Probe


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256, device: str = "cpu"
) -> float:
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i : i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct / max(1, len(y))


def _measure(probe: Probe) -> tuple[float, dict]:
    return accuracy(probe.deployed, probe.val_x, probe.val_y, device=probe.device), {}


register_figure(
    Figure(
        name="accuracy",
        unit="fraction",
        direction="maximize",
        label="validation accuracy (%)",
        short="accuracy",
        measure=_measure,
        method="top-1 on the validation split (the test split is kept for export), deployed model",
        weight="accuracy",
        constraint="min_accuracy",
        scale=100.0,
        log_axis=False,
        tolerance=Tolerance("at most one validation image", images=1.0),
    )
)
