"""Top-1 accuracy on the validation split, on the deployed model."""

from __future__ import annotations

import torch
from torch import nn

from tradeoff.search.trial.figures import Figure, Tolerance, register_figure
from tradeoff.search.trial.measure.probe import Probe


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256, device: str = "cpu"
) -> float:
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i : i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct / max(1, len(y))


def binomial_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of an accuracy of ``correct`` of ``n`` images: the
    beta quantiles scipy's ``binomtest(...).proportion_ci(method="exact")`` gives, from
    ``scipy.special`` (a tenth of the import time of ``scipy.stats``, which every command paid)."""
    from scipy.special import betaincinv

    if n <= 0:
        return 0.0, 1.0
    k, n, alpha = int(correct), int(n), 1.0 - confidence
    low = float(betaincinv(k, n - k + 1, alpha / 2)) if k > 0 else 0.0
    high = float(betaincinv(k + 1, n - k, 1 - alpha / 2)) if k < n else 1.0
    return low, high


def differ_beyond_noise(a: float, b: float, n: int, z: float = 1.96) -> bool:
    """Whether accuracies ``a`` and ``b``, each measured on the same ``n`` images, differ by
    more than the 95 % interval of a difference of two proportions (normal approximation,
    unpaired: wider than a paired test, so a tie is called when in doubt)."""
    if n <= 0:
        return a != b
    se = ((a * (1 - a) + b * (1 - b)) / n) ** 0.5
    return abs(a - b) > max(z * se, 1.0 / n)


def _measure(probe: Probe) -> tuple[float, dict]:
    value = accuracy(probe.deployed, probe.val_x, probe.val_y, device=probe.device)
    n = len(probe.val_y)
    lo, hi = binomial_interval(round(value * n), n)
    return value, {"accuracy_ci": [lo, hi], "accuracy_images": n}


register_figure(
    Figure(
        name="accuracy",
        unit="fraction",
        direction="maximize",
        label="validation accuracy (%)",
        short="accuracy",
        measure=_measure,
        method=(
            "top-1 on the validation split (the test split is kept for export), in the runtime that is "
            "timed; with its exact binomial 95 % interval"
        ),
        weight="accuracy",
        constraint="min_accuracy",
        scale=100.0,
        log_axis=False,
        tolerance=Tolerance("at most one validation image", images=1.0),
        details=("accuracy_ci", "accuracy_images"),
    )
)
