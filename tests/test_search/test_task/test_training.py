from __future__ import annotations

import math

import pytest
import torch

from tradeoff.search.task.training import kd_loss


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.0]])
    t = torch.tensor([[0.5, 2.5, -1.0]])
    y = torch.tensor([1])
    T, alpha = 2.0, 0.7

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    ps, pt = softmax([x / T for x in s[0].tolist()]), softmax([x / T for x in t[0].tolist()])
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))
    ce = -math.log(softmax(s[0].tolist())[1])
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert kd_loss(s, t, y, temperature=T, alpha=alpha).item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_with_alpha_zero_is_cross_entropy():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert kd_loss(s, t, y, temperature=3.0, alpha=0.0).item() == pytest.approx(ce.item())


def test_a_diverging_fine_tune_fails_with_its_reason(tiny_task):
    from tradeoff.search.task.training import finetune_kd
    from tradeoff.spaces import PlanError

    model = tiny_task.build()
    logits = torch.randn(len(tiny_task.train), 10)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(PlanError, match="fine-tuning diverged"):
        finetune_kd(model, tiny_task.train, logits, steps=5)


def test_fine_tuning_reduces_the_distillation_loss(tiny_task):
    from tradeoff.search.task.training import finetune_kd

    torch.manual_seed(0)
    model = tiny_task.build()
    x, y = tiny_task.train.x[:256], tiny_task.train.y[:256]
    logits = torch.nn.functional.one_hot(tiny_task.train.y, 10).float() * 5
    before = kd_loss(model.eval()(x), logits[:256], y, temperature=4.0, alpha=0.7).item()
    finetune_kd(model, tiny_task.train, logits, steps=60, lr=0.05)
    after = kd_loss(model.eval()(x), logits[:256], y, temperature=4.0, alpha=0.7).item()
    assert after < 0.5 * before


def test_the_teacher_recipe_trains_with_flips_and_reports_each_epoch(tiny_task):
    from tradeoff.search.task.training import train_classifier
    from tradeoff.search.trial.measure import accuracy

    seen = []

    def on_epoch(epoch, loss, model):
        seen.append((epoch, loss, model.training))

    model = train_classifier(
        tiny_task.build(),
        tiny_task.train,
        epochs=8,
        batch_size=64,
        shift=2,
        flip=True,
        bf16=True,
        on_epoch=on_epoch,
    )
    assert [e for e, _, _ in seen] == list(range(1, 9)) and not any(training for _, _, training in seen)
    assert seen[-1][1] < seen[0][1]  # the loss falls
    assert all(p.is_contiguous() for p in model.parameters())  # back from channels-last
    assert accuracy(model, tiny_task.val.x, tiny_task.val.y) > 0.5


def test_distilling_longer_brings_the_student_closer_to_the_teacher(tiny_task, tiny_teacher):
    from tradeoff.search.task.training import distill

    torch.manual_seed(0)
    student = tiny_task.build()
    x = tiny_task.val.x
    with torch.no_grad():
        target = tiny_teacher.eval()(x).argmax(1)

    def agreement(m):
        with torch.no_grad():
            return float((m.eval()(x).argmax(1) == target).float().mean())

    assert distill(student, tiny_teacher, tiny_task.train, steps=0) is student  # nothing to do
    before = agreement(student)
    reports = []
    distill(
        student,
        tiny_teacher,
        tiny_task.train,
        steps=120,
        lr=0.05,
        flip=False,
        on_progress=lambda step, loss: reports.append(step),
        every=50,
    )
    assert reports == [50, 100, 120]
    assert agreement(student) > max(0.8, before + 0.3)


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected",
    [(False, False, False), (True, False, True), (False, True, True)],
    ids=["plain-avx512-emulates", "avx512-bf16", "amx"],
)
def test_bf16_is_used_only_where_the_cpu_runs_it_natively(avx512_bf16, amx, expected, monkeypatch):
    # oneDNN says yes on any AVX-512 CPU, where it emulates bf16 (1.67x slower than float32 on a
    # Cascade Lake Xeon): the instructions decide on x86
    from tradeoff.search.task import training

    monkeypatch.setattr(training.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert training.bf16_supported() is expected
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert training.bf16_supported() is False  # no oneDNN bf16 at all
