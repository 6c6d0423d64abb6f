from __future__ import annotations

import pytest
import torch

from tradeoff.search.errors import UsageError
from tradeoff.search.task.models import MODELS
from tradeoff.search.task.tasks import get_task


def test_digits_is_split_disjointly_and_stratified():
    task = get_task("digits", "tiny_resnet")
    sizes = len(task.train), len(task.val), len(task.test)
    assert sum(sizes) == 1797
    assert sizes[0] > sizes[1] > 0 and sizes[2] > 0
    for split in (task.train, task.val, task.test):
        counts = torch.bincount(split.y, minlength=10).float()
        assert counts.min() / counts.max() > 0.8  # every class in about the same share
    assert task.num_classes == 10 and task.example_input.shape == (1, 1, 8, 8)


def test_split_and_fingerprint_are_reproducible():
    a, b = get_task("digits", "tiny_resnet"), get_task("digits", "tiny_resnet")
    assert torch.equal(a.val.x, b.val.x) and a.fingerprint() == b.fingerprint()
    assert get_task("digits", "resnet18").fingerprint() != a.fingerprint()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_registered_model_classifies_digits(model):
    task = get_task("digits", model)
    assert task.build().eval()(task.val.x[:2]).shape == (2, 10)


def test_unknown_task_and_model_name_what_exists():
    with pytest.raises(
        UsageError, match="--data mnist: no such folder, and not a bundled task \\(digits, fashion-mnist\\)"
    ):
        get_task("mnist", "resnet18")
    with pytest.raises(UsageError, match="unknown model 'vgg99'"):
        get_task("digits", "vgg99")


def test_teacher_is_accurate_and_cached(tiny_task, tiny_teacher):
    from tradeoff.search.task.teacher import train_teacher
    from tradeoff.search.trial.measure import accuracy

    assert accuracy(tiny_teacher, tiny_task.test.x, tiny_task.test.y) > 0.9
    _, _, seconds = train_teacher(tiny_task, log=lambda _m: None)
    assert seconds == 0.0  # second call: from the cache
