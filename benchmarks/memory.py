"""Peak memory (`peak_memory_bytes`): the figure on common models, and what measuring it costs.

    python benchmarks/memory.py           # resnet18 and mobilenet_v2 at 224 px, the bundled task
    python benchmarks/memory.py --quick   # the bundled task's models only

For each model: the weights as held in memory (float32, and on int8 kernels), the peak of live
activations in one batch-1 forward (measured by tradeoff's dispatch-mode tracer), the total,
and the seconds one measurement takes (median of 5, 1 thread, so it is comparable across
machines with different core counts).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from tradeoff.search.task.models import model_builder
from tradeoff.search.trial.measure import cpu_name, peak_activation_bytes, peak_memory_bytes, weight_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cases = [
        ("tiny_resnet, digits 8x8", (1, 1, 8, 8), model_builder("tiny_resnet", 1, 8, 10)),
        ("resnet18, digits 8x8 (the bundled task)", (1, 1, 8, 8), model_builder("resnet18", 1, 8, 10)),
    ]
    if not a.quick:
        cases += [
            ("resnet18, 224x224", (1, 3, 224, 224), lambda: torchvision.models.resnet18(num_classes=1000)),
            (
                "mobilenet_v2, 224x224",
                (1, 3, 224, 224),
                lambda: torchvision.models.mobilenet_v2(num_classes=1000),
            ),
        ]
    print(f"CPU: {cpu_name()}, 1 thread, torch {torch.__version__}\n")
    print(
        "| model | weights fp32 | weights int8 kernels | peak activations | peak memory fp32 | measured in |"
    )
    print("|---|---|---|---|---|---|")
    for name, shape, build in cases:
        model, x = build().eval(), torch.randn(*shape)
        seconds = []
        for _ in range(5):
            t = time.perf_counter()
            total = peak_memory_bytes(model, x)
            seconds.append(time.perf_counter() - t)
        print(
            f"| {name} | {weight_bytes(model) / 1e6:.2f} MB | {weight_bytes(model, weight_bits=8) / 1e6:.2f} MB | "
            f"{peak_activation_bytes(model, x) / 1e6:.3f} MB | {total / 1e6:.2f} MB | "
            f"{statistics.median(seconds) * 1e3:.0f} ms |"
        )


if __name__ == "__main__":
    main()
