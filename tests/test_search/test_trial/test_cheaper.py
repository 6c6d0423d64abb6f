"""Cheaper trials (runner, stopping, weights): constraints before fine-tuning, float models
reused across bit-widths, hopeless fine-tunes stopped, kept models exported without training."""

from __future__ import annotations

import json
import os

import optuna
import pytest

import tradeoff.search.trial.runner as runner_module
from tradeoff.search.study.records import (
    CURVE_ATTR,
    DROPPED_PREFIX,
    KEPT_ATTR,
    REUSED_ATTR,
    SIBLING_ROLE,
    STOPPED_ATTR,
)
from tradeoff.search.study.study import open_study
from tradeoff.search.study.worker import counts, run_worker
from tradeoff.search.trial.kept import KeptModels
from tradeoff.search.trial.runner import Runner
from tradeoff.search.trial.stopping import CHECKPOINTS, MIN_HISTORY, judge
from tradeoff.spaces import Plan
from tradeoff.storage import open_artifact_store, open_storage

PRUNE_ONLY = {  # prune only, at two bit-widths: the other knobs fixed at off
    "student_width": {"low": 1, "high": 1},
    "rank_ratio": {"low": 1, "high": 1},
    "weight_bits": {"choices": [32, 8]},
}


class FineTunes:
    """Counts the fine-tunes the runner starts (the real one runs)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = runner_module.finetune_kd

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(runner_module, "finetune_kd", counted)


def _setup(url, tmp_path, task, teacher, *, name="c", keep="front", **given):
    storage = open_storage(url)
    settings = {
        "model": "tiny_resnet",
        "finetune_steps": 24,
        "latency_repeats": 5,
        "sampler": "tpe",
        "space": PRUNE_ONLY,
        "keep_models": keep,
        **given,
    }
    study, config, _ = open_study(storage, name, settings, n_trials=8)
    for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,)):  # no start design: the
        storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)  # test's plans
    store = open_artifact_store(str(tmp_path / "artifacts"))
    runner = Runner(config, task, teacher, kept=KeptModels(store, keep=config.keep_models))
    return study, storage, runner, store


def _run_plan(study, runner, plan: Plan, **attrs):
    """Run ``plan`` as the study's next trial (its queued bit-width variants are left waiting)."""
    number = len(study.trials)
    study.enqueue_trial(plan.params(), user_attrs=attrs)
    study.optimize(runner, n_trials=1)
    return study.trials[number]


def test_a_plan_that_breaks_a_size_constraint_is_never_fine_tuned(
    storage_url, tmp_path, tiny_task, tiny_teacher, monkeypatch
):
    tunes = FineTunes(monkeypatch)
    study, _, runner, _ = _setup(
        storage_url, tmp_path, tiny_task, tiny_teacher, constraints={"max_size_mb": 0.01}
    )
    trial = _run_plan(study, runner, Plan(prune_ratio=0.3))
    assert tunes.calls == 0
    assert trial.state == optuna.trial.TrialState.PRUNED
    stopped = trial.user_attrs[STOPPED_ATTR]
    assert stopped["when"] == "before fine-tuning" and "max_size_mb" in stopped["reason"]
    # its figures (all but accuracy, which needs training) and the constraint it breaks
    for name in ("size_bytes", "params", "flops", "latency_ms", "energy_mj"):
        assert trial.user_attrs[name] > 0
    assert "accuracy" not in trial.user_attrs
    assert trial.constraints["max_size_mb"] == pytest.approx(trial.user_attrs["size_bytes"] - 0.01e6)
    assert trial.constraints["max_size_mb"] > 0
    # the figures are those of the trained plan: shapes, not weights, set them
    monkeypatch.undo()
    loose, _, free, _ = _setup(storage_url, tmp_path / "b", tiny_task, tiny_teacher, name="loose")
    measured = _run_plan(loose, free, Plan(prune_ratio=0.3))
    for name in ("size_bytes", "params", "flops"):
        assert measured.user_attrs[name] == trial.user_attrs[name]
    # a pruned plan does not use up the budget
    assert counts(study) == (0, 0)


def test_a_bit_width_change_reuses_the_stored_float_model_with_the_figures_of_a_fresh_build(
    tmp_path, tiny_task, tiny_teacher, monkeypatch
):
    tunes = FineTunes(monkeypatch)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study, _, runner, _ = _setup(url, tmp_path, tiny_task, tiny_teacher)
    first = _run_plan(study, runner, Plan(prune_ratio=0.4))
    assert tunes.calls == 1 and first.state == optuna.trial.TrialState.COMPLETE
    # a new process (nothing in memory) reads the float model from the artifact store
    fresh_store = KeptModels(open_artifact_store(str(tmp_path / "artifacts")))
    other = Runner(runner.config, tiny_task, tiny_teacher, kept=fresh_store)
    (queued,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # its 8-bit variant
    study.optimize(other, n_trials=1)
    second = study.trials[queued.number]
    assert second.params["weight_bits"] == 8 and second.user_attrs["role"] == SIBLING_ROLE
    assert tunes.calls == 1, "the 8-bit plan was fine-tuned again"
    assert second.user_attrs[REUSED_ATTR] == first.number
    assert second.user_attrs["time_finetune_s"] < 0.1
    # the same plan built from scratch, without any stored model
    import dataclasses

    cold = Runner(dataclasses.replace(runner.config, reuse=False), tiny_task, tiny_teacher)
    # in the int8 form the trial measured (the faster of two, by timing: a rebuild takes the trial's)
    form = second.user_attrs["int8_form"]
    compressed, _ = cold.build(Plan(prune_ratio=0.4, weight_bits=8), int8_form=form)
    assert tunes.calls == 2
    m = cold.measure(compressed).to_dict()
    for name in ("accuracy", "size_bytes", "params", "flops", "energy_mj"):
        assert second.user_attrs[name] == m[name], name


def test_a_new_structure_queues_its_other_bit_widths_which_do_not_use_the_budget(
    tmp_path, tiny_task, tiny_teacher, monkeypatch
):
    tunes = FineTunes(monkeypatch)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    study, storage, runner, _ = _setup(url, tmp_path, tiny_task, tiny_teacher)
    study.enqueue_trial(Plan(prune_ratio=0.4).params())
    ran = run_worker(study, storage, runner, budget=1)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert ran == 1 and counts(study) == (1, 0)
    assert [t.params["weight_bits"] for t in trials] == [32, 8]  # the variant ran before the worker stopped
    assert (
        trials[1].user_attrs["role"] == SIBLING_ROLE and trials[1].user_attrs[REUSED_ATTR] == trials[0].number
    )
    assert tunes.calls == 1


def _history_trial(study, number_of_objectives, *, accuracy, size, latency, curve_at=None):
    attrs = {"accuracy": accuracy, "size_bytes": size, "latency_ms": latency, "energy_mj": 1.0}
    if curve_at is not None:
        attrs[CURVE_ATTR] = {"from_scratch": False, "points": [[f, curve_at] for f in CHECKPOINTS]}
    values = [accuracy, size, latency, 1.0][:number_of_objectives]
    study.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs))


def test_a_fine_tune_that_cannot_reach_the_front_stops_with_its_checkpoint_and_reason(
    tmp_path, tiny_task, tiny_teacher
):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study, _, runner, _ = _setup(url, tmp_path, tiny_task, tiny_teacher)
    n = len(study.directions)
    # the study's history: plans that gained at most 5 points after each checkpoint, and one plan
    # that is better than anything this space can make (tiny, instant, perfect)
    for _ in range(MIN_HISTORY):
        _history_trial(study, n, accuracy=0.90, size=5e5, latency=1.0, curve_at=0.85)
    _history_trial(study, n, accuracy=1.0, size=10.0, latency=1e-6)
    best = study.trials[-1].number
    trial = _run_plan(study, runner, Plan(prune_ratio=0.4))
    assert trial.state == optuna.trial.TrialState.PRUNED
    stopped = trial.user_attrs[STOPPED_ATTR]
    assert stopped["when"] == "during fine-tuning"
    assert stopped["checkpoint"] == CHECKPOINTS[0] and stopped["step"] == 6 and stopped["of_steps"] == 24
    assert (
        f"each of the 2 models it would make is beaten on every objective (by #{best}, #{best})"
        in stopped["reason"]
        and "+5.0 points" in stopped["reason"]
    )
    assert trial.user_attrs[CURVE_ATTR]["points"][0][0] == CHECKPOINTS[0]
    assert trial.user_attrs["size_bytes"] > 0  # its untrained figures, which the rule compared


def test_the_rule_does_not_stop_without_history_or_against_a_plan_it_can_beat():
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    objectives = ("accuracy", "size_bytes", "latency_ms")
    figures = {"size_bytes": 100.0, "latency_ms": 1.0}
    for _ in range(MIN_HISTORY - 1):
        _history_trial(study, 3, accuracy=0.9, size=50.0, latency=0.5, curve_at=0.5)
    measured = []

    def plan(*variants):
        return lambda: measured.append(len(variants)) or list(variants)

    kw = {"fraction": CHECKPOINTS[0], "accuracy": 0.1, "from_scratch": False}
    assert judge(study.trials, objectives, plan(figures), **kw) is None  # too little history
    _history_trial(study, 3, accuracy=0.9, size=50.0, latency=0.5, curve_at=0.5)
    assert "at most" in judge(study.trials, objectives, plan(figures), **kw)  # 0.1 + 0.4 + 0.02 < 0.9
    measured.clear()
    assert (
        judge(study.trials, objectives, plan(figures), **{**kw, "accuracy": 0.49}) is None
    )  # may reach 0.91
    assert not measured  # no plan is that accurate: nothing had to be measured to say so
    assert judge(study.trials, objectives, plan({**figures, "size_bytes": 10.0}), **kw) is None  # smaller
    assert (
        judge(study.trials, objectives, plan(figures), **{**kw, "from_scratch": True}) is None
    )  # other kind
    # a fine-tune that also makes another bit-width: stopped only if that model is beaten too
    smaller = {**figures, "size_bytes": 10.0}
    assert judge(study.trials, objectives, plan(figures, smaller), **kw) is None
    assert "each of the 2 models" in judge(study.trials, objectives, plan(figures, figures), **kw)


def test_export_of_a_trial_with_kept_weights_does_not_train(tmp_path, tiny_task, tiny_teacher, monkeypatch):
    from tradeoff.search import commands

    url = f"sqlite:///{tmp_path / 'e.db'}"
    given = {
        "model": "tiny_resnet",
        "finetune_steps": 24,
        "latency_repeats": 5,
        "teacher_epochs": 2,
        "space": PRUNE_ONLY,
        "keep_models": "all",
    }
    monkeypatch.chdir(tmp_path)
    study = commands.run_trials(
        "search",
        url=url,
        study_name="e",
        given=given,
        n_trials=2,
        artifacts=str(tmp_path / "artifacts"),
        threads=2,
        log=lambda _m: None,
    )
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    quantized = [t for t in done if t.params["weight_bits"] == 8 and t.params["prune_ratio"] > 0]
    assert quantized, [t.params for t in done]  # the start plan and its other bit-width, at least
    chosen = quantized[0]
    kept = chosen.user_attrs[KEPT_ATTR]
    assert kept["bytes"] > 0 and len(kept["sha256"]) == 64

    def no_training(*args, **kwargs):
        raise AssertionError("export trained a model")

    monkeypatch.setattr(runner_module, "finetune_kd", no_training)
    out = tmp_path / "export"
    record = commands.export(
        url,
        "e",
        str(out),
        trial=chosen.number,
        weights=None,
        constraints={},
        force=False,
        artifacts=str(tmp_path / "artifacts"),
        device="cpu",
        log=lambda _m: None,
    )
    assert "kept model" in record["weights_from"]
    # the same file, so the same figures; latency is timed again and may move with the machine's load
    assert [d for d in record["differences"] if not d.startswith("latency_ms")] == []
    assert record["measured"]["accuracy"] == chosen.user_attrs["accuracy"]
    assert record["measured"]["size_bytes"] == chosen.user_attrs["size_bytes"]
    on_disk = json.loads((out / "record.json").read_text())
    assert on_disk["files"]["model.onnx"]["sha256"] == kept["sha256"]
    assert os.path.getsize(out / "model.onnx") == kept["bytes"]


def test_keep_front_removes_the_weights_of_trials_off_the_front(tmp_path, tiny_task, tiny_teacher):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    study, _, runner, store = _setup(url, tmp_path, tiny_task, tiny_teacher, space={**PRUNE_ONLY})
    good = _run_plan(study, runner, Plan(prune_ratio=0.2, weight_bits=8))
    assert runner.kept.tidy(study, runner.config.objectives, lambda p: "x" * 32)["trials"] == 1
    # a synthetic trial that dominates everything pushes the real one off the front
    n = len(study.directions)
    _history_trial(study, n, accuracy=1.0, size=1.0, latency=1e-6)
    kept = runner.kept.tidy(study, runner.config.objectives, lambda p: "x" * 32)
    assert kept["trials"] == 0
    assert study.user_attrs[f"{DROPPED_PREFIX}{good.number}"] == "off the front"
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        store.open_reader(good.user_attrs[KEPT_ATTR]["artifact_id"])


def test_a_float_model_file_that_would_run_code_is_not_loaded(tmp_path, tiny_task, tiny_teacher):
    """The float model file is read as tensors only (``weights_only``): a pickle that would run
    code, even one whose SHA-256 the study records, is not loaded; the plan is trained again."""
    import hashlib
    import pickle

    url = f"sqlite:///{tmp_path / 'x.db'}"
    study, _, runner, store = _setup(url, tmp_path, tiny_task, tiny_teacher)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = pickle.dumps({"w": Evil()})
    path = tmp_path / "evil.pt"
    path.write_bytes(data)
    artifact = optuna.artifacts.upload_artifact(
        artifact_store=store, file_path=str(path), study_or_trial=study
    )
    key = "ab" * 32
    meta = {"artifact_id": artifact, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    study.set_user_attr(runner.kept._float_attr(key), meta)
    assert KeptModels(store).get_float(study, key) is None
    assert not marker.exists()
