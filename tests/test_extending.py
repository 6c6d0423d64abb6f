"""Extending tradeoff without touching it: a knob or a runtime from one file.

The knob lives in ``tests/knob_plugins/zero_biases.py``, a per-layer knob (with a model of known
per-layer sensitivity) in ``tests/knob_plugins/zero_layer_biases.py``, the runtime in
``tests/knob_plugins/eager_runtime.py``; the CLI imports them with ``--plugin`` (in a
subprocess, so this test process's registries stay as shipped).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import optuna
import pytest
from conftest import QUICKER, run_tradeoff

PLUGINS = str(Path(__file__).resolve().parent / "knob_plugins")
OTHERS_OFF = [
    "--space",
    "student_width=1",
    "--space",
    "prune_ratio=0",
    "--space",
    "rank_ratio=1",
    "--space",
    "weight_bits=32",
]


def test_a_knob_from_one_file_is_proposed_applied_shown_and_exported(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # objectives accuracy and params: the zeroed biases are 5 fewer stored parameters, so the
    # plan is on the front whatever its accuracy
    r = run_tradeoff(
        "search",
        "--n-trials",
        "2",
        *QUICKER,
        "--plugin",
        "zero_biases",
        "--objectives",
        "accuracy,params",
        *OTHERS_OFF,
        "--sampler",
        "tpe",  # its start design: the baseline and the knob's single-technique plan
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}")
    base, probe = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert base.params["zero_biases"] == 0.0 and probe.params["zero_biases"] == 0.5  # proposed
    assert probe.state == optuna.trial.TrialState.COMPLETE
    assert probe.user_attrs["plan"]["zero_biases"] == 0.5
    assert probe.user_attrs["params"] == base.user_attrs["params"] - 5  # applied: 5 biases are 0
    front = run_tradeoff("front", cwd=tmp_path)
    assert front.returncode == 0, front.stderr
    row = next(line for line in front.stdout.splitlines() if line.startswith(f"#{probe.number} "))
    assert row.rstrip().endswith("zero_biases=0.5")
    select = run_tradeoff("select", "--weights", "accuracy=0,params=1", cwd=tmp_path)
    assert select.returncode == 0, select.stderr
    assert select.stdout.splitlines()[1].split()[1] == f"#{probe.number}"  # fewest params: first
    assert "zero_biases=0.5" in select.stdout.splitlines()[1]

    # a resume needs no --plugin: the study names it
    again = run_tradeoff("search", "--n-trials", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr

    out = tmp_path / "zeroed"
    exp = run_tradeoff("export", "--trial", str(probe.number), "--output", str(out), cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    assert "zero_biases=0.5" in exp.stderr  # "rebuilding trial #1 (zero_biases=0.5) ..."
    record = json.loads((out / "record.json").read_text())
    assert record["plan"]["zero_biases"] == 0.5 and record["config"]["plugins"] == ["zero_biases"]
    # applied: half of the classifier's 10 biases (the only conv/linear biases of tiny_resnet) are 0
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(out / "model.onnx")).graph
    bias = next(numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("fc.bias"))
    assert bias.shape == (10,) and int(np.sum(bias == 0)) == 5


def test_a_per_layer_knob_from_one_file_is_measured_allocated_shown_and_exported(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # bias_net: `hidden`'s biases are trained, `idle`'s frozen at zero (zeroing them costs nothing)
    r = run_tradeoff(
        "search",
        "--n-trials",
        "2",
        "--plugin",
        "zero_layer_biases",
        "--model",
        "zero_layer_biases:bias_net",
        "--objectives",
        "accuracy,params",
        *OTHERS_OFF[2:],  # student_width is one number at any granularity: it may stay
        "--space",
        "student_width=1",
        "--granularity",
        "allocated",
        "--finetune-steps",
        "5",
        "--latency-repeats",
        "3",
        "--sampler",
        "tpe",  # its start design: the baseline and the knob alone at 0.5 with sharpness 0.5
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}")
    # the sensitivity pass measured the plug-in's groups, and only the knobs the space switches on
    groups = study.user_attrs["tradeoff:sensitivity"]["groups"]
    assert groups == {"zero_layer_biases": 3}, groups
    table = run_tradeoff("sensitivity", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "zero_layer_biases: biases zeroed at fraction" in table.stdout
    rows = {
        line.split()[0]: line.split()
        for line in table.stdout.splitlines()
        if line.startswith(("idle", "hidden"))
    }
    assert float(rows["idle"][-1]) == 0 < float(rows["hidden"][-1])  # the effect of zeroing all
    # allocated: the insensitive layer is zeroed more than the sensitive one, at the same budget
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    probe = next(t for t in done if t.params.get("zero_layer_biases") == 0.5)
    plan = probe.user_attrs["plan"]["zero_layer_biases"]
    assert isinstance(plan, dict) and plan["idle"] > plan["hidden"], plan
    assert (plan["idle"] + plan["hidden"] + plan["out"] * 10 / 32) / (2 + 10 / 32) >= 0.5 - 1e-9  # a floor
    front = run_tradeoff("front", cwd=tmp_path)
    assert front.returncode == 0, front.stderr
    row = next(line for line in front.stdout.splitlines() if line.startswith(f"#{probe.number} "))
    assert "zero_layer_biases=" in row and "over 3 groups" in row
    out = tmp_path / "exported"
    exp = run_tradeoff("export", "--trial", str(probe.number), "--output", str(out), cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    record = json.loads((out / "record.json").read_text())
    assert record["plan"]["zero_layer_biases"] == plan  # rebuilt from the per-layer plan
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(out / "model.onnx")).graph
    biases = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith(".bias")}
    zeros = {name.removesuffix(".bias"): float(np.mean(b == 0)) for name, b in biases.items()}
    assert zeros["idle"] == 1.0 and abs(zeros["hidden"] - plan["hidden"]) < 1 / 32 + 1e-9


def test_a_per_layer_knob_without_its_groups_is_refused_where_layers_are_searched(tmp_path, monkeypatch):
    (tmp_path / "uniform_knob.py").write_text(
        "from dataclasses import dataclass\n"
        "from tradeoff.spaces import Applied, Knob, KnobConfig, register_knob\n"
        "@dataclass(frozen=True)\n"
        "class C(KnobConfig):\n"
        "    value: float = 0.0\n"
        "@register_knob\n"
        "class K(Knob):\n"
        "    name, config, off, per_layer, order = 'uniform_knob', C, 0.0, True, 45\n"
        "    def apply(self, model, config, ctx):\n"
        "        return Applied(model)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    quicker = QUICKER[:2] + QUICKER[4:]  # without --granularity global
    r = run_tradeoff("search", "--n-trials", "1", *quicker, "--plugin", "uniform_knob", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "tradeoff: error: search space: knob `uniform_knob` takes per-layer values but does not list its "
        "layer groups (Knob.layer_groups and Knob.probe_), so --granularity allocated cannot set it layer by "
        "layer: use --granularity global, or implement them"
    )
    assert (
        not (tmp_path / "tradeoff.db").exists()
        or sqlite3.connect(tmp_path / "tradeoff.db").execute("select count(*) from studies").fetchone()[0]
        == 0
    )


def test_a_study_whose_plugin_is_missing_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PLUGINS)
    r = run_tradeoff(
        "search", "--n-trials", "1", *QUICKER, "--plugin", "zero_biases", *OTHERS_OFF, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    monkeypatch.delenv("PYTHONPATH")
    again = run_tradeoff("front", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        "tradeoff: error: plug-in 'zero_biases' does not import: ModuleNotFoundError: No module named "
        "'zero_biases'"
    )
    with sqlite3.connect(tmp_path / "tradeoff.db") as c:  # nothing stored was touched
        assert c.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0] == 1


@pytest.mark.parametrize("bad", ["zero_biases:fn", "no_such_module_xyz"])
def test_a_bad_plugin_is_refused_before_anything_is_stored(tmp_path, bad):
    r = run_tradeoff("search", "--n-trials", "1", *QUICKER, "--plugin", bad, cwd=tmp_path)
    assert r.returncode == 2 and "plug" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (
        not (tmp_path / "tradeoff.db").exists()
        or sqlite3.connect(tmp_path / "tradeoff.db").execute("select count(*) from studies").fetchone()[0]
        == 0
    )


def test_a_runtime_from_one_file_measures_the_latency_of_a_search(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = run_tradeoff(
        "search",
        "--n-trials",
        "1",
        *QUICKER,
        "--plugin",
        "eager_runtime",
        "--runtime",
        "eager",
        "--space",
        "weight_bits=32",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.user_attrs["latency_runtime"] == "eager" for t in done)
    trial = done[0]  # the baseline
    assert trial.user_attrs["latency_method"].startswith("PyTorch eager (test plug-in), ")
    assert trial.user_attrs["latency_ms"] > 0
    out = tmp_path / "eager"
    exp = run_tradeoff("export", "--trial", str(trial.number), "--output", str(out), cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    record = json.loads((out / "record.json").read_text())
    assert record["deployed_file"] == "model.pt" and record["runtime"].startswith("eager ")


def test_a_runtime_nobody_registered_is_one_line_naming_the_choices(tmp_path):
    r = run_tradeoff("search", "--n-trials", "1", *QUICKER, "--runtime", "eager", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "tradeoff: error: --runtime 'eager': choose one of onnxruntime, openvino, torchscript"
    )
    assert (
        not (tmp_path / "tradeoff.db").exists()
        or sqlite3.connect(tmp_path / "tradeoff.db").execute("select count(*) from studies").fetchone()[0]
        == 0
    )
