"""Every combination of knob settings at their default bounds, on real torchvision models."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision

from tradeoff.spaces import ApplyContext, Plan, apply_plan, default_space


def bounds(name: str) -> list:
    spec = default_space()[name]
    if "choices" in spec:
        return [min(spec["choices"]), max(spec["choices"])]
    return [spec["low"], spec["high"]]


# the default space's knobs; a knob searched only where named (block_drop) is tested with the
# others in its own module (tests/test_spaces/test_depth.py)
SEARCHED = sorted(default_space())
COMBOS = list(itertools.product(*(bounds(n) for n in SEARCHED)))
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
    plan = Plan(**dict(zip(SEARCHED, values)))
    x = torch.randn(1, 3, 32, 32)
    ctx = ApplyContext(example_input=x, num_classes=10, calibration=[torch.randn(4, 3, 32, 32)])
    out = apply_plan(teacher, plan, ctx)
    assert out.model(torch.randn(2, 3, 32, 32)).shape == (2, 10), (name, plan)
