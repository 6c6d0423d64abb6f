"""Every combination of knob settings at their default bounds, on real torchvision models."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision

from tradeoff.spaces import KNOBS, ApplyContext, Plan, apply_plan


def bounds(name: str) -> list:
    spec = KNOBS[name].default_space  # its range when searched (block_drop only where named)
    if "choices" in spec:
        return [min(spec["choices"]), max(spec["choices"])]
    return [spec["low"], spec["high"]]


COMBOS = list(itertools.product(*(bounds(n) for n in sorted(KNOBS))))
MODELS = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    torch.manual_seed(0)
    return request.param, MODELS[request.param]().eval()


@pytest.mark.parametrize("values", COMBOS, ids=lambda v: "-".join(f"{x:g}" for x in v))
def test_every_combination_at_the_bounds_runs_forward(model, values):
    name, teacher = model
    plan = Plan(**dict(zip(sorted(KNOBS), values)))
    x = torch.randn(1, 3, 32, 32)
    ctx = ApplyContext(example_input=x, num_classes=10, calibration=[torch.randn(4, 3, 32, 32)])
    out = apply_plan(teacher, plan, ctx)
    assert out.model(torch.randn(2, 3, 32, 32)).shape == (2, 10), (name, plan)
