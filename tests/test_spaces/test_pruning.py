from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tradeoff.spaces import ApplyContext, Plan, apply_plan
from tradeoff.spaces.pruning import classifier_layers, prune_channels_


class TwoConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.flatten(self.pool(self.conv2(x)), 1))


def _ctx(num_classes=10, shape=(1, 3, 8, 8)):
    return ApplyContext(example_input=torch.randn(*shape), num_classes=num_classes)


def test_half_the_channels_halves_this_and_the_next_layers_weights():
    model = TwoConv()
    before1, before2 = model.conv1.weight.numel(), model.conv2.weight.numel()
    prune_channels_(model, 0.5, _ctx(), [])
    # conv1 keeps 8 of 16 filters: 8*3*3*3 weights; conv2 loses half its inputs and half its
    # filters: 16*8*3*3, a quarter of 32*16*3*3.
    assert model.conv1.weight.shape == (8, 3, 3, 3)
    assert model.conv1.weight.numel() == before1 // 2
    assert model.conv2.in_channels == 8
    assert model.conv2.weight.numel() == before2 // 4
    assert model.bn1.num_features == 8
    assert model.fc.out_features == 10  # the classifier keeps every class
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_pruning_keeps_the_strongest_filters():
    model = TwoConv()
    with torch.no_grad():
        model.conv1.weight.mul_(0.01)
        model.conv1.weight[[1, 5, 6, 9, 10, 11, 12, 15]] *= 1000.0
        model.conv2.weight.mul_(0.001)  # make conv1's outputs decide the group's importance
    strong = model.conv1.weight[[1, 5, 6, 9, 10, 11, 12, 15]].clone()
    prune_channels_(model, 0.5, _ctx(), [])
    torch.testing.assert_close(model.conv1.weight, strong)


def test_residual_groups_stay_consistent(tiny_task):
    model = tiny_task.build()
    prune_channels_(model, 0.5, _ctx(10, (1, 1, 8, 8)), [])
    # the residual add couples layer1's output with the stem: both pruned to the same width
    assert model.conv1.out_channels == model.layer1[0].conv2.out_channels == 8
    assert all(m.out_channels % 8 == 0 for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_unstructured_mode_zeroes_the_smallest_weights_and_keeps_the_shape():
    model = TwoConv()
    out = apply_plan(model, Plan(prune_ratio=0.5, options={"prune_ratio": {"mode": "unstructured"}}), _ctx())
    assert out.sparse
    conv1, conv2 = out.model.conv1.weight, out.model.conv2.weight
    assert conv1.shape == model.conv1.weight.shape  # nothing removed, only zeroed
    zeros = int((conv1 == 0).sum() + (conv2 == 0).sum())
    assert zeros == round(0.5 * (conv1.numel() + conv2.numel()))
    assert not hasattr(out.model.conv1, "weight_orig")  # the mask is folded in
    assert int((out.model.fc.weight == 0).sum()) == 0  # the classifier is left dense


def test_classifier_is_detected():
    model = TwoConv()
    assert classifier_layers(model, 10) == [model.fc]


def test_apply_plan_never_changes_the_teacher(tiny_task):
    teacher = tiny_task.build()
    before = copy.deepcopy(teacher.state_dict())
    ctx = _ctx(10, (1, 1, 8, 8))
    student = apply_plan(teacher, Plan(prune_ratio=0.5), ctx).model
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_finetune_runs_after_a_structural_knob_only(tiny_task):
    calls = []

    def finetune(m, from_scratch):
        calls.append(from_scratch)
        return m

    teacher = tiny_task.build()
    ctx = ApplyContext(example_input=torch.randn(1, 1, 8, 8), num_classes=10, finetune=finetune)
    apply_plan(teacher, Plan(), ctx)
    assert calls == []
    apply_plan(teacher, Plan(prune_ratio=0.25), ctx)
    assert calls == [False]  # a pruned teacher: the short fine-tune, not a student's distillation


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.5, 0.8, 0.95])
def test_ratios_at_and_inside_the_limits_give_a_working_model(tiny_task, ratio):
    model = apply_plan(tiny_task.build(), Plan(prune_ratio=ratio), _ctx(10, (1, 1, 8, 8))).model
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
