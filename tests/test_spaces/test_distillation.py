from __future__ import annotations

import torch
from torch import nn

from tradeoff.spaces import ApplyContext, Plan, apply_plan


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
