from __future__ import annotations

import pytest
import torch
from torch import nn

from tradeoff.spaces import ApplyContext, Plan, PlanError, apply_plan


def conv_params(m: nn.Module) -> int:
    return sum(x.weight.numel() for x in m.modules() if isinstance(x, nn.Conv2d))


def test_a_student_at_half_width_has_about_a_quarter_of_the_conv_parameters(tiny_task):
    teacher = tiny_task.build()
    ctx = ApplyContext(example_input=tiny_task.example_input, num_classes=10)
    out = apply_plan(teacher, Plan(student_width=0.5), ctx)
    student = out.model
    ratio = conv_params(student) / conv_params(teacher)
    assert 0.2 < ratio < 0.3
    assert out.facts.from_scratch  # what the knob did is part of what it returns
    assert student(tiny_task.val.x[:4]).shape == (4, 10)


def test_the_student_is_re_initialised_and_distilled_at_length(tiny_task):
    teacher = tiny_task.build()
    seen = []
    ctx = ApplyContext(
        example_input=tiny_task.example_input,
        num_classes=10,
        finetune=lambda m, scratch: seen.append(scratch) or m,
    )
    student = apply_plan(teacher, Plan(student_width=0.5), ctx).model
    assert seen == [True]
    # the stem keeps 8 of 16 filters; none of them equals a teacher filter any more
    t, s = teacher.conv1.weight, student.conv1.weight
    assert not any(torch.equal(s[i], t[j]) for i in range(len(s)) for j in range(len(t)))


class _Squeeze(nn.Module):
    """A squeeze-excitation module: global pool, two 1x1 convolutions, a gate."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, 16, 1), nn.Conv2d(16, channels, 1)

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class _TwoStages(nn.Module):
    """16 channels at 16x16, 32 at 8x8 (with a squeeze-excitation), a hidden linear layer."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.se = _Squeeze(32)
        self.hidden = nn.Linear(32, 32)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.se(self.down(self.a(self.stem(x))))
        return self.fc(torch.relu(self.hidden(x.mean((2, 3)))))


def test_stages_are_named_by_feature_map_size_in_forward_order():
    from tradeoff.spaces.distillation import student_stages

    stages = student_stages(_TwoStages(), torch.randn(1, 3, 16, 16), 10)
    assert [s.name for s in stages] == ["16x16", "8x8"]
    first, second = stages
    assert set(first.roots) == {"stem.0", "a.0"}
    # the squeeze (after a global pool) and the hidden linear layer join the stage before them
    assert {"se.fc1", "hidden"} <= set(second.roots) and "down.0" in second.layers
    assert first.params == 3 * 16 * 9 + 16 * 16 * 9


def test_a_width_per_stage_thins_that_stage_alone_and_re_initialises_everything():
    teacher = _TwoStages()
    ctx = ApplyContext(example_input=torch.randn(1, 3, 16, 16), num_classes=10)
    out = apply_plan(teacher, Plan(student_width={"8x8": 0.5}), ctx)
    s = out.model
    assert out.facts.from_scratch
    assert s.stem[0].out_channels == 16 and s.a[0].out_channels == 16  # 16x16 at full width
    assert s.down[0].out_channels == 16 and s.se.fc1.out_channels == 8 and s.hidden.out_features == 16
    assert s.fc.out_features == 10
    assert not torch.equal(s.stem[0].weight, teacher.stem[0].weight)  # a student: trained from scratch
    assert s(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    # one width for every stage, as a mapping or as a number, makes the same architecture
    both = apply_plan(teacher, Plan(student_width={"*": 0.5}), ctx).model
    one = apply_plan(teacher, Plan(student_width=0.5), ctx).model
    shapes = [tuple(p.shape) for p in both.parameters()]
    assert shapes == [tuple(p.shape) for p in one.parameters()]
    assert both.stem[0].out_channels == 8


def test_a_stage_the_model_does_not_have_is_refused_with_its_stages():
    ctx = ApplyContext(example_input=torch.randn(1, 3, 16, 16), num_classes=10)
    with pytest.raises(PlanError, match=r"no stage '4x4' \(its stages, by feature-map size: 16x16, 8x8\)"):
        apply_plan(_TwoStages(), Plan(student_width={"4x4": 0.5}), ctx)


def test_torchvision_resnet18_has_its_four_stages():
    import torchvision

    from tradeoff.spaces.distillation import student_stages

    stages = student_stages(torchvision.models.resnet18(num_classes=10), torch.randn(1, 3, 64, 64), 10)
    assert [s.name for s in stages] == ["16x16", "8x8", "4x4", "2x2"]
    # the stem's channels are layer1's (a residual add couples them): one stage
    assert {"conv1", "layer1.0.conv1", "layer1.1.conv1"} == set(stages[0].roots)
    assert all(r.startswith("layer4") for r in stages[3].roots)


def test_the_sensitivity_pass_thins_each_stage_of_the_teacher_alone():
    from tradeoff.spaces import KNOBS, ProbeContext

    knob = KNOBS["student_width"]
    teacher = _TwoStages().eval()
    ctx = ProbeContext(torch.randn(1, 3, 16, 16), 10)
    groups, skipped = knob.layer_groups(teacher, ctx)
    assert [g.name for g in groups] == ["16x16", "8x8"] and not skipped
    with knob.probed(teacher, groups[1], 0.5, ctx) as (model, width):
        assert width == 0.5 and model.down[0].out_channels == 16 and model.stem[0].out_channels == 16
        # the teacher's weights are kept (the probe is no student): the stem is untouched
        assert torch.equal(model.stem[0].weight, teacher.stem[0].weight)
    assert teacher.down[0].out_channels == 32
