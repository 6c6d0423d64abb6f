"""Every knob at once on each torchvision architecture family a user may bring: residual
connections, depthwise and grouped convolutions, squeeze-excitation, channel shuffle, fire
modules. Random weights, small inputs; the result must run and give one score per class, and
whatever a knob could not handle must be listed, never raised."""

from __future__ import annotations

import pytest
import torch
import torchvision

from tradeoff.spaces import ApplyContext, Plan, apply_plan

ARCHITECTURES = [
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "shufflenet_v2_x1_0",
    "regnet_x_400mf",
    "squeezenet1_1",
]
PLAN = Plan(block_drop=0.4, student_width=0.75, prune_ratio=0.3, rank_ratio=0.5, weight_bits=8)
SIZE = 64  # the smallest input every one of these runs on after 32x downsampling, int8 included


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_knob_on(name):
    torch.manual_seed(0)
    teacher = torchvision.models.get_model(name, weights=None, num_classes=7).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    ctx = ApplyContext(example_input=x, num_classes=7, calibration=[torch.randn(4, 3, SIZE, SIZE)])
    out = apply_plan(teacher, PLAN, ctx)
    with torch.no_grad():
        assert out.model(torch.randn(3, 3, SIZE, SIZE)).shape == (3, 7)
    assert out.weight_bits == 8 and any(
        m.__class__.__module__.startswith("torch.ao.nn.quantized") for m in out.model.modules()
    )
    n_teacher = sum(p.numel() for p in teacher.parameters())
    n_float = sum(p.numel() for p in out.float_model.parameters())
    assert n_float < 0.8 * n_teacher, f"{name}: {n_float} of {n_teacher} parameters left"
    assert all(
        s.split(":")[0] in ("block_drop", "student_width", "pruning", "low_rank", "weight_bits")
        for s in out.skipped
    )
    print(f"{name}: {n_float / n_teacher:.2f} of the parameters; skipped {len(out.skipped)}: {out.skipped}")


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_student_width_per_stage(name):
    """Each family lists its resolution stages and thins the last one alone; a model whose graph
    torch-pruning cannot trace whole (channel shuffle) is one clear error, never a wrong student."""
    from tradeoff.spaces import PlanError
    from tradeoff.spaces.distillation import student_stages

    torch.manual_seed(0)
    teacher = torchvision.models.get_model(name, weights=None, num_classes=7).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    ctx = ApplyContext(example_input=x, num_classes=7)
    if name == "shufflenet_v2_x1_0":
        with pytest.raises(PlanError, match="per stage needs torch-pruning's graph of the whole model"):
            apply_plan(teacher, Plan(student_width={"2x2": 0.5}), ctx)
        return
    stages = student_stages(teacher, x, 7)
    sizes = [int(s.name.split("x")[0]) for s in stages]
    assert sizes == sorted(sizes, reverse=True) and len(stages) >= 3, [s.name for s in stages]
    student = apply_plan(teacher, Plan(student_width={stages[-1].name: 0.5}), ctx).model
    with torch.no_grad():
        assert student(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 7)
    first = stages[0].roots[0]
    assert student.get_submodule(first).weight.shape == teacher.get_submodule(first).weight.shape
    last = stages[-1].roots[-1]
    assert student.get_submodule(last).weight.shape[0] < teacher.get_submodule(last).weight.shape[0]
