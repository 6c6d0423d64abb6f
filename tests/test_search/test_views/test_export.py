"""`tradeoff export` / `verify` and `search.views.verify.load`, on a real finished study."""

from __future__ import annotations

import json
import shutil

import numpy as np
import optuna
import pytest
import torch

from tradeoff.search.cli import main
from tradeoff.search.task.tasks import get_task
from tradeoff.search.trial.measure import accuracy
from tradeoff.search.views.export import ExportError, write_manifest
from tradeoff.search.views.verify import load


@pytest.fixture
def study_dir(finished_study, tmp_path, monkeypatch):
    """A private copy of the finished study (database and artifact store), as the working
    directory."""
    shutil.copy(finished_study / "tradeoff.db", tmp_path / "tradeoff.db")
    shutil.copytree(finished_study / "tradeoff-artifacts", tmp_path / "tradeoff-artifacts")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRADEOFF_STORAGE", raising=False)
    return tmp_path


def run(capsys, *args):
    """`tradeoff ARGS` in this process (the errors need no fresh interpreter): (code, out, err)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _trials(path):
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{path / 'tradeoff.db'}")
    return study, [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def _pick(trials, *, quantized: bool):
    """A compressed trial (not the baseline) with float or quantized weights."""
    from tradeoff.spaces import Plan

    for t in trials:
        plan = Plan.from_params(t.user_attrs["plan"])  # per-layer values in an allocated study
        structural = any(k.structural and not k.is_off(c.value) for k, c in plan.configs())
        quant = any(not k.structural and not k.is_off(c.value) for k, c in plan.configs())
        if quant == quantized and (structural or quantized):
            return t
    raise AssertionError("the finished study has no such trial")


def test_export_load_remeasure_matches_stored_plan_and_figures(study_dir, cli):
    _, trials = _trials(study_dir)
    t = _pick(trials, quantized=False)
    r = cli("export", "--trial", str(t.number), "--output", "out", cwd=study_dir)
    assert r.returncode == 0, r.stderr
    record = json.loads((study_dir / "out" / "record.json").read_text())
    plan = json.loads((study_dir / "out" / "plan.json").read_text())
    assert plan == record["plan"] == t.user_attrs["plan"]
    # the searched numbers (budgets and the allocation sharpness) made this per-layer plan
    assert set(t.params) - {"allocation"} <= set(plan)
    for name in ("params", "flops", "size_bytes"):  # deterministic figures: exactly the stored ones
        assert record["measured"][name] == t.user_attrs[name]
    assert not [d for d in record["differences"] if not d.startswith(("latency", "energy"))]
    assert record["baseline"]["trial"] == 0 and record["task"]["model"] == "tiny_resnet"
    assert {"torch", "optuna", "python"} <= set(record["versions"])

    exported = load(str(study_dir / "out"))
    task = get_task("digits", "tiny_resnet")
    assert record["task"]["fingerprint"] == task.fingerprint()
    val_acc = accuracy(exported.model, task.val.x, task.val.y)
    assert abs(val_acc - t.user_attrs["accuracy"]) * len(task.val) <= 1
    test_acc = accuracy(exported.model, task.test.x, task.test.y)
    assert test_acc == pytest.approx(record["test_accuracy"])

    # the ONNX twin runs in onnxruntime with the same top-1 as PyTorch on the whole test split
    import onnxruntime as ort

    assert record["onnx"]["written"], record["onnx"]
    session = ort.InferenceSession(str(study_dir / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_top1 = session.run(None, {"input": task.test.x.numpy()})[0].argmax(1)
    with torch.no_grad():
        torch_top1 = exported.model(task.test.x).argmax(1).numpy()
    np.testing.assert_array_equal(onnx_top1, torch_top1)

    v = cli("verify", "out", cwd=study_dir)
    assert v.returncode == 0, v.stderr
    assert "out: verified" in v.stdout


def test_export_of_a_quantized_trial_by_weights(study_dir, cli):
    _, trials = _trials(study_dir)
    t = _pick(trials, quantized=True)
    r = cli("export", "--trial", str(t.number), "-o", "q", cwd=study_dir)
    assert r.returncode == 0, r.stderr
    record = json.loads((study_dir / "q" / "record.json").read_text())
    assert record["measured"]["weight_bits"] == t.user_attrs["weight_bits"] < 32
    assert record["measured"]["size_bytes"] == t.user_attrs["size_bytes"]
    # the file written is the QDQ file ONNX Runtime measured; no TorchScript twin of a quantized model
    assert record["deployed_file"] == "model.onnx" and record["runtime"].startswith("onnxruntime ")
    assert set(record["files"]) == {"model.onnx"}
    import onnx

    # in the int8 form the trial measured (the faster one there): QDQ, or int8 weights alone
    ops = {n.op_type for n in onnx.load(str(study_dir / "q" / "model.onnx")).graph.node}
    assert "DequantizeLinear" in ops
    assert ("QuantizeLinear" in ops) == (t.user_attrs["int8_form"] == "kernels")
    assert record["measured"]["size_bytes"] == t.user_attrs["size_bytes"]
    exported = load(str(study_dir / "q"))
    with torch.no_grad():
        assert exported.model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    v = cli("verify", "q", cwd=study_dir)
    assert v.returncode == 0 and "q: verified" in v.stdout, v.stderr


def test_an_onnx_export_pointing_at_external_data_is_refused(study_dir, cli, tmp_path):
    """An ONNX file whose tensors live in external files would make loading read a path named
    inside the export: refused before any session starts, even with a manifest that matches."""
    import onnx

    _, trials = _trials(study_dir)
    t = _pick(trials, quantized=True)
    r = cli("export", "--trial", str(t.number), "-o", str(tmp_path / "x"), cwd=study_dir)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "x" / "model.onnx"
    proto = onnx.load(str(path))
    big = max(proto.graph.initializer, key=lambda i: len(i.raw_data))
    big.data_location = onnx.TensorProto.EXTERNAL
    entry = big.external_data.add()
    entry.key, entry.value = "location", "/etc/hostname"
    big.ClearField("raw_data")
    path.write_bytes(proto.SerializeToString())
    (tmp_path / "x" / "manifest.json").unlink()
    write_manifest(str(tmp_path / "x"))  # a manifest rewritten to match: the file itself is refused
    with pytest.raises(ExportError, match="external files"):
        load(str(tmp_path / "x"))


def test_export_by_weights_takes_the_top_of_select(study_dir, capsys):
    code, out, err = run(capsys, "select", "--weights", "size=1", "--min-accuracy", "0.5")
    assert code == 0, err
    top = int(out.splitlines()[1].split()[1].lstrip("#"))
    code, _, err = run(capsys, "export", "--weights", "size=1", "--min-accuracy", "0.5", "-o", "best")
    assert code == 0, err
    assert json.loads((study_dir / "best" / "record.json").read_text())["trial"] == top


def test_bad_exports_are_one_line_errors_and_write_nothing(study_dir, capsys):
    study, trials = _trials(study_dir)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    failed = len(study.trials) - 1
    (study_dir / "taken").mkdir()
    (study_dir / "taken" / "keep.txt").write_text("mine")
    cases = [
        (["--trial", "999"], "no such trial"),
        (["--trial", str(failed)], "did not complete"),
        (["--trial", "0", "--weights", "size=1"], "either --trial or --weights"),
        (
            ["--weights", "size=1", "--max-latency-ms", "0.000001"],
            "no trial meets the constraints; nearest: #",
        ),
        (["--weights", "speed=1"], "unknown weight 'speed'"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, "export", *args, "-o", "new")
        assert code == 2 and message in err, (args, err)
        assert err.strip().count("\n") == 0, err
    code, _, err = run(capsys, "export", "--trial", "0", "-o", "taken")
    assert code == 2 and "exists" in err and "--force" in err
    assert (study_dir / "taken" / "keep.txt").read_text() == "mine"
    assert not (study_dir / "new").exists()
    assert sorted(p.name for p in study_dir.iterdir() if p.name.startswith(".")) == []

    # --force replaces only a previous export: never a folder of the user's, the working directory
    # that holds the study database, the artifact store (its teacher) or a folder inside it
    db, store = (
        (study_dir / "tradeoff.db").read_bytes(),
        sorted((study_dir / "tradeoff-artifacts").rglob("*")),
    )
    for output, message in [
        ("taken", "replaces only a previous export"),
        (".", "holds the study's database"),
        (str(study_dir), "holds the study's database"),
        ("tradeoff-artifacts", "is the study's artifact store"),
        ("tradeoff-artifacts/x", "lies inside the study's artifact store"),
        ("", "--output is empty"),
    ]:
        code, _, err = run(capsys, "export", "--trial", "0", "-o", output, "--force")
        assert code == 2 and message in err, (output, err)
        assert err.strip().count("\n") == 0, err
    assert (study_dir / "taken" / "keep.txt").read_text() == "mine"
    assert (study_dir / "tradeoff.db").read_bytes() == db
    assert sorted((study_dir / "tradeoff-artifacts").rglob("*")) == store

    code, _, err = run(capsys, "export", "--trial", "0", "-o", "mine")
    assert code == 0, err
    code, _, err = run(capsys, "export", "--trial", "0", "-o", "mine", "--force")  # a previous export
    assert code == 0, err
    (study_dir / "mine" / "notes.txt").write_text("added by hand")  # now it holds more than an export
    code, _, err = run(capsys, "export", "--trial", "0", "-o", "mine", "--force")
    assert code == 2 and "replaces only a previous export" in err
    assert (study_dir / "mine" / "notes.txt").exists() and (study_dir / "mine" / "model.pt").exists()


def test_tampered_or_truncated_exports_do_not_load(study_dir, capsys):
    code, _, err = run(capsys, "export", "--trial", "0", "-o", "base")
    assert code == 0, err
    good = study_dir / "base"

    def copy(name):
        dst = study_dir / name
        shutil.copytree(good, dst)
        return dst

    truncated = copy("truncated")
    data = (truncated / "model.pt").read_bytes()
    (truncated / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="truncated or replaced"):
        load(str(truncated))

    tampered = copy("tampered")
    data = bytearray((tampered / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="does not match its SHA-256"):
        load(str(tampered))

    broken = copy("broken-record")
    text = (broken / "record.json").read_text()
    (broken / "record.json").write_text(text[: len(text) // 2])
    with pytest.raises(ExportError, match="truncated or replaced"):  # the manifest covers record.json
        load(str(broken))

    with pytest.raises(ExportError, match="record.json is missing"):
        load(str(study_dir / "tradeoff-artifacts"))

    # a model file that is not what its name says (rewritten with its manifest): one line, no
    # traceback, whether it is the measured file (exit 2) or its twin (exit 1, a problem)
    record = json.loads((good / "record.json").read_text())
    measured = record.get("deployed_file", "model.pt")
    for name in ("model.pt", "model.onnx"):
        if not (good / name).exists():
            continue
        swapped = copy(f"swapped-{name}")
        (swapped / name).write_bytes(b"not a model at all" * 100)
        (swapped / "manifest.json").unlink()
        write_manifest(str(swapped))
        code, _, err = run(capsys, "verify", f"swapped-{name}")
        assert "Traceback" not in err and err.strip(), err
        if name == measured:
            assert code == 2 and "does not load" in err and err.strip().count("\n") == 0, err
        else:
            assert code == 1 and f"{name} does not load as" in err, err

    # a record whose claims the model does not meet: verify says so and exits 1
    # (rewritten together with its manifest, as only a deliberate forger would)
    lying = copy("lying")
    record = json.loads((lying / "record.json").read_text())
    record["test_accuracy"] = 0.1
    (lying / "record.json").write_text(json.dumps(record))
    (lying / "manifest.json").unlink()
    write_manifest(str(lying))
    code, _, err = run(capsys, "verify", "lying")
    assert code == 1 and "verify: test accuracy" in err
    for name in ("truncated", "tampered", "broken-record"):
        code, _, err = run(capsys, "verify", name)
        assert code == 2 and err.startswith("tradeoff: error:"), err
        assert err.strip().count("\n") == 0


def test_a_final_finetune_trains_the_plan_longer_and_records_both_accuracies(study_dir, capsys):
    _, trials = _trials(study_dir)
    t = _pick(trials, quantized=False)  # a structural plan: its kept float model trains on
    code, out, err = run(capsys, "export", "--trial", str(t.number), "-o", "ft", "--finetune-steps", "60")
    assert code == 0, err
    record = json.loads((study_dir / "ft" / "record.json").read_text())
    final = record["final_finetune"]
    assert final["steps"] == 60 and final["seconds"] > 0
    for part in ("search", "final"):
        for split in ("val", "test"):
            low, high = final[part][f"{split}_interval"]
            assert low <= final[part][f"{split}_accuracy"] <= high
    # the search-time figures are the trial's own; the written model is the final one
    assert abs(final["search"]["val_accuracy"] - t.user_attrs["accuracy"]) * 360 <= 1
    assert record["test_accuracy"] == pytest.approx(final["final"]["test_accuracy"], abs=1e-6)
    assert final["raised"] == (final["final"]["test_accuracy"] > final["search"]["test_accuracy"])
    said = "raised" if final["raised"] else "did not raise"
    assert "final fine-tune (60 steps" in err and f"{said} the test accuracy" in err
    assert "then a final fine-tune of 60 steps" in record["weights_from"]
    exported = load(str(study_dir / "ft"))  # the export is whole: its manifest lists what it holds
    task = get_task("digits", "tiny_resnet")
    assert accuracy(exported.model, task.test.x, task.test.y) == pytest.approx(record["test_accuracy"])
    assert json.loads(out)["final_finetune"]["steps"] == 60


def test_the_front_is_exported_at_once_with_the_rank_correlation(study_dir, capsys):
    from tradeoff.search.views.report import front

    study, _ = _trials(study_dir)
    on_front = [t.number for t in front(study)]
    code, out, err = run(capsys, "export", "--front", "-o", "fr", "--finetune-steps", "20")
    assert code == 0, err
    summary = json.loads((study_dir / "fr" / "front.json").read_text())
    assert [r["trial"] for r in summary["trials"]] == on_front
    assert sorted(p.name for p in (study_dir / "fr").iterdir()) == sorted(
        ["front.json", *(f"trial-{n}" for n in on_front)]
    )
    for row in summary["trials"]:
        load(str(study_dir / "fr" / row["folder"]))  # each a whole export
        assert (row["final"] is None) == (row["final_steps"] == 0)  # a plan without structure: not trained
    rho = summary["rank_correlation"]
    tuned = [r for r in summary["trials"] if r["final"]]
    assert rho["plans"] == len(tuned)
    if len(tuned) >= 3:
        assert rho["spearman"] is None or -1 <= rho["spearman"] <= 1
    # a second front export replaces the first only with --force; a plain export folder is not a front
    code, _, err = run(capsys, "export", "--front", "-o", "fr")
    assert code == 2 and "exists" in err
    from tradeoff.search.views.export import check_target

    check_target("fr", True, front=True)  # a previous front export: --force may replace it
    with pytest.raises(ExportError, match="not one"):
        check_target("fr", True)  # ... but a single export may not
    (study_dir / "fr" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "export", "--front", "-o", "fr", "--force")
    assert code == 2 and "not one" in err and (study_dir / "fr" / "notes.txt").exists()
    code, _, err = run(capsys, "export", "--front", "--trial", "1", "-o", "other")
    assert code == 2 and "drop --trial" in err
