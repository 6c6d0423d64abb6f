"""Bad input, one case a row: every case ends with exit status 2, one line naming what is wrong,
no traceback, and the study it met (if any) byte for byte as it was, or no study at all.

The commands run in this process (``main``), which is what the console script calls; the cases
that need a subprocess (signals, concurrency, secrets in the environment) are in
``test_hardening.py``.
"""

from __future__ import annotations

import pickle
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from PIL import Image

from tradeoff.search.cli import main


def _pickle_with_code(path):
    class Boom:
        def __reduce__(self):
            return (print, ("this ran",))

    path.write_bytes(pickle.dumps({"weight": Boom()}))


def _state_dict_of_another_model(path):
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)


def _tiny_resnet_weights(path, fill):
    from tradeoff.search.task.models import model_builder

    state = model_builder("tiny_resnet", 1, 8, 10)().state_dict()
    torch.save({k: torch.full_like(v, fill) if v.is_floating_point() else v for k, v in state.items()}, path)


def _strip(root):
    for c in ("a", "b"):
        (root / "data" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), i * 30, np.uint8)).save(root / "data" / c / f"{i}.png")
    Image.fromarray(np.zeros((1, 100_000, 3), np.uint8)).save(root / "data" / "a" / "strip.png")


def _drop_sensitivity_table(root):
    """An allocated study whose table is not measured yet (its create was interrupted)."""
    with sqlite3.connect(root / "tradeoff.db") as c:
        c.execute("delete from study_user_attributes where key = 'tradeoff:sensitivity'")


def _one_class(root):
    (root / "data" / "only").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), i * 30, np.uint8)).save(root / "data" / "only" / f"{i}.png")


def _no_images(root):
    for c in ("a", "b"):
        (root / "data" / c).mkdir(parents=True)
        (root / "data" / c / "notes.txt").write_text("not an image")


def _val_without_train(root):
    (root / "data" / "val" / "a").mkdir(parents=True)


def _a_file(root):
    (root / "data").write_text("a file, not a folder")


def _plugin_not_a_model(root):
    (root / "plug.py").write_text("def net(num_classes):\n    return 42\n")


def _not_a_database(root):
    (root / "notes.db").write_text("my notes\n" * 50)


# (case id, where: "study" = a finished study in the working directory, "fresh" = none,
#  preparation, arguments, what the one line must say)
CASES = [
    (
        "resume-other-model",
        "study",
        None,
        ["search", "--model", "resnet18"],
        "different configuration: model",
    ),
    ("space-out-of-range", "study", None, ["search", "--space", "prune_ratio=0.5:1.5"], "prune_ratio"),
    ("space-unknown-knob", "study", None, ["search", "--space", "nope=0.1:0.2"], "unknown knob"),
    ("space-not-a-number", "study", None, ["search", "--space", "prune_ratio=abc"], "finite numbers"),
    ("space-no-value", "study", None, ["search", "--space", "prune_ratio"], "expected KNOB="),
    (
        "space-four-parts",
        "study",
        None,
        ["search", "--space", "prune_ratio=0.1:0.2:0.3:0.4"],
        "expected KNOB=",
    ),
    (
        "space-step-mismatch",
        "study",
        None,
        ["search", "--space", "prune_ratio=0:0.5:0.3"],
        "multiple of step",
    ),
    ("space-bits-not-allowed", "study", None, ["search", "--space", "weight_bits=7.5"], "weight_bits"),
    ("space-inf-step", "study", None, ["search", "--space", "rank_ratio=0.1:0.9:inf"], "finite"),
    ("objective-unknown", "study", None, ["search", "--objectives", "accuracy,speed"], "speed"),
    ("constraint-accuracy-over-1", "fresh", None, ["search", "--min-accuracy", "1.5"], "--min-accuracy"),
    ("constraint-zero", "fresh", None, ["search", "--max-size-mb", "0"], "--max-size-mb"),
    ("constraint-nan", "study", None, ["search", "--max-memory-mb", "nan"], "finite"),
    ("scalarize-negative", "study", None, ["search", "--scalarize", "accuracy=-1"], ">= 0"),
    ("scalarize-all-zero", "study", None, ["search", "--scalarize", "accuracy=0"], "every weight is 0"),
    ("scalarize-garbage", "study", None, ["search", "--scalarize", "nonsense"], "NAME=NUMBER"),
    ("plugin-missing", "fresh", None, ["search", "--plugin", "no_such_module_xyz"], "does not import"),
    ("prune-mode-unknown", "study", None, ["search", "--prune-mode", "sideways"], "invalid choice"),
    ("allocate-unknown", "fresh", None, ["search", "--allocate", "nope"], "no per-layer knob of that name"),
    (
        "stop-when-met-without-a-constraint",
        "fresh",
        None,
        ["search", "--stop-when-met"],
        "--stop-when-met stops at the first plan meeting every constraint",
    ),
    (
        "allocate-at-global",
        "fresh",
        None,
        ["search", "--allocate", "student_width", "--granularity", "global"],
        "sets no knob layer by layer",
    ),
    (
        "allocate-a-knob-left-off",
        "fresh",
        None,
        ["search", "--allocate", "student_width", "--space", "student_width=1"],
        "the search space leaves student_width off",
    ),
    ("n-trials-zero", "study", None, ["search", "--n-trials", "0"], "positive whole number"),
    ("n-trials-float", "study", None, ["search", "--n-trials", "2.5"], "not a whole number"),
    ("threads-zero", "study", None, ["search", "--threads", "0"], "positive whole number"),
    ("device-cuda-absent", "study", None, ["search", "--device", "cuda"], "no CUDA device"),
    ("target-unknown", "study", None, ["search", "--target", "tpu"], "different configuration: target"),
    ("worker-without-budget", "study", None, ["worker"], "has no trial budget"),
    ("create-existing", "study", None, ["create"], "already exists"),
    ("select-unknown-weight", "study", None, ["select", "--weights", "speed=1"], "unknown weight 'speed'"),
    ("select-weight-no-value", "study", None, ["select", "--weights", "accuracy"], "NAME=NUMBER"),
    ("select-weight-twice", "study", None, ["select", "--weights", "accuracy=1,accuracy=2"], "given twice"),
    ("select-accuracy-over-1", "study", None, ["select", "--min-accuracy", "2"], "--min-accuracy"),
    ("select-nothing-feasible", "study", None, ["select", "--max-latency-ms", "0.000001"], "no trial meets"),
    ("select-unknown-study", "study", None, ["select", "--study-name", "nope"], "no study named 'nope'"),
    ("select-limit-zero", "study", None, ["select", "--limit", "0"], "positive whole number"),
    ("export-no-such-trial", "study", None, ["export", "--trial", "999", "-o", "out"], "no such trial"),
    ("export-negative-trial", "study", None, ["export", "--trial", "-1", "-o", "out"], "no such trial"),
    (
        "export-no-parent",
        "study",
        None,
        ["export", "--trial", "0", "-o", "/no/such/dir/out"],
        "does not exist",
    ),
    (
        "export-trial-and-weights",
        "study",
        None,
        ["export", "--trial", "0", "--weights", "size=1", "-o", "o"],
        "either --trial or --weights",
    ),  # fmt: skip
    ("front-no-folder", "study", None, ["front", "--storage", "sqlite:////no/such/folder/x.db"], "folder"),
    ("front-unsupported", "study", None, ["front", "--storage", "oracle://u@h/x"], "unsupported storage"),
    ("front-malformed", "study", None, ["front", "--storage", "not a url"], "malformed storage URL"),
    ("report-no-parent", "study", None, ["report", "--output", "/no/such/dir/r.html"], "does not exist"),
    ("verify-no-export", "study", None, ["verify", "/no/such/export"], "not an export directory"),
    ("verify-not-an-export", "study", None, ["verify", "tradeoff-artifacts"], "record.json is missing"),
    ("dashboard-port-range", "study", None, ["dashboard", "--port", "70000"], "1 to 65535"),
    ("dashboard-port-text", "study", None, ["dashboard", "--port", "http"], "not a whole number"),
    ("dashboard-bad-host", "study", None, ["dashboard", "--host", "256.1.1.1"], "cannot listen"),
    (
        "data-one-class",
        "fresh",
        _one_class,
        ["search", "--data", "data", "--model", "tiny_resnet"],
        "at least two class",
    ),  # fmt: skip
    ("data-no-images", "fresh", _no_images, ["search", "--data", "data"], "no readable images"),
    ("data-val-without-train", "fresh", _val_without_train, ["search", "--data", "data"], "no train/"),
    ("data-a-file", "fresh", _a_file, ["search", "--data", "data"], "not a directory"),
    ("data-no-such", "fresh", None, ["search", "--data", "mnist"], "no such folder"),
    ("data-plugin-missing", "fresh", None, ["search", "--data", "nomod_xyz:splits"], "cannot import"),
    ("model-unknown", "fresh", None, ["search", "--model", "resnet9000"], "unknown model 'resnet9000'"),
    (
        "model-plugin-not-a-module",
        "fresh",
        _plugin_not_a_model,
        ["search", "--model", "plug:net"],
        "expected a torch.nn.Module",
    ),  # fmt: skip
    (
        "checkpoint-runs-code",
        "fresh",
        lambda r: _pickle_with_code(r / "evil.pt"),
        ["search", "--model", "tiny_resnet", "--checkpoint", "evil.pt"],
        "does not load as weights only",
    ),  # fmt: skip
    (
        "checkpoint-other-model",
        "fresh",
        lambda r: _state_dict_of_another_model(r / "other.pt"),
        ["search", "--model", "tiny_resnet", "--checkpoint", "other.pt"],
        "does not fit tiny_resnet",
    ),  # fmt: skip
    ("checkpoint-missing", "fresh", None, ["search", "--checkpoint", "nope.pt"], "no such file"),
    (
        "checkpoint-all-nan",
        "fresh",
        lambda r: _tiny_resnet_weights(r / "nan.pt", float("nan")),
        ["search", "--model", "tiny_resnet", "--checkpoint", "nan.pt"],
        "hold NaN or infinite values",
    ),  # fmt: skip
    (
        "checkpoint-at-chance",
        "fresh",
        lambda r: _tiny_resnet_weights(r / "zeros.pt", 0.0),
        ["search", "--model", "tiny_resnet", "--checkpoint", "zeros.pt"],
        "which is chance",
    ),  # fmt: skip
    ("image-size-huge", "fresh", None, ["search", "--image-size", "2000"], "8 to 1024"),
    ("normalize-unknown", "fresh", None, ["search", "--normalize", "zscore"], "invalid choice"),
    (
        "storage-not-a-database",
        "fresh",
        _not_a_database,
        ["search", "--storage", "sqlite:///notes.db"],
        "not a SQLite database",
    ),  # fmt: skip
    (
        "storage-password-on-command-line",
        "fresh",
        None,
        ["search", "--storage", "postgresql://u:hunter2@127.0.0.1:9/x"],
        "carries a password",
    ),  # fmt: skip
    ("weights-inf", "fresh", None, ["search", "--scalarize", "accuracy=inf"], "finite"),
    ("study-name-empty", "study", None, ["front", "--study-name", ""], "study name is empty"),
    (
        "sensitivity-not-measured-yet",
        "study",
        _drop_sensitivity_table,
        ["sensitivity"],
        "(granularity allocated) has no sensitivity table yet",
    ),  # fmt: skip
    ("weights-overflow", "study", None, ["select", "--weights", "accuracy=1e308,size=1e308"], "out of range"),
    ("weights-subnormal", "study", None, ["select", "--weights", "accuracy=1e-9"], "out of range"),
    ("threads-huge", "study", None, ["search", "--threads", "1000000000"], "a thread count is 1 to 1024"),
    ("seed-huge", "fresh", None, ["search", "--seed", "99999999999999999999999"], "`seed` must be <="),
    ("teacher-epochs-huge", "fresh", None, ["search", "--teacher-epochs", "1000000000"], "<= 10000"),
    ("heartbeat-huge", "study", None, ["worker", "--heartbeat-interval", "1000000000"], "1 to 86400"),
    ("study-name-blank", "study", None, ["search", "--study-name", "  "], "study name is empty"),
    ("study-name-not-utf8", "study", None, ["select", "--study-name", "\udcff\udcfe"], "not valid UTF-8"),
    ("study-name-control", "study", None, ["front", "--study-name", "a\x1b[2Jb"], "control characters"),
    ("study-name-too-long", "study", None, ["front", "--study-name", "x" * 600], "at most 512"),
    (
        "storage-query-unparseable",
        "fresh",
        None,
        ["front", "--storage", "sqlite:///x.db?timeout=abc"],
        "bad value in the storage URL",
    ),  # fmt: skip
    (
        "storage-sqlite-two-slashes",
        "study",
        None,
        ["front", "--storage", "sqlite://tradeoff.db"],
        "names no file",
    ),
    (
        "storage-sqlite-memory",
        "fresh",
        None,
        ["search", "--storage", "sqlite:///:memory:"],
        "in-memory database",
    ),
    (
        "storage-mysql-driver",
        "fresh",
        None,
        ["front", "--storage", "mysql://u@127.0.0.1/x"],
        "pip install mysqlclient",
    ),
    ("export-empty-output", "study", None, ["export", "--trial", "0", "-o", ""], "--output is empty"),
    (
        "export-force-onto-the-study",
        "study",
        None,
        ["export", "--trial", "0", "-o", ".", "--force"],
        "holds the study's database",
    ),  # fmt: skip
    (
        "report-output-a-folder",
        "study",
        lambda r: (r / "rdir").mkdir(),
        ["report", "--output", "rdir"],
        "a directory",
    ),
    ("report-output-empty", "study", None, ["report", "--output", ""], "--output is empty"),
    ("grace-below-two-beats", "study", None, ["search", "--grace-period", "5"], "shorter than twice"),
    (
        "data-image-strip",
        "fresh",
        lambda r: _strip(r),
        ["search", "--data", "data", "--model", "tiny_resnet"],
        "aspect ratio over 20:1",
    ),  # fmt: skip
]


@pytest.mark.parametrize("case, where, prepare, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    case, where, prepare, args, message, finished_study, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRADEOFF_STORAGE", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))  # plug-ins in the working directory, as with the CLI
    if where == "study":
        shutil.copy(finished_study / "tradeoff.db", tmp_path / "tradeoff.db")
        shutil.copytree(finished_study / "tradeoff-artifacts", tmp_path / "tradeoff-artifacts")
    if prepare is not None:
        prepare(tmp_path)
    before = (tmp_path / "tradeoff.db").read_bytes() if where == "study" else None
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as e:  # argparse's refusal: our parser prints one line and exits 2
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert "hunter2" not in err + out and "this ran" not in out + err
    if where == "study":
        assert (tmp_path / "tradeoff.db").read_bytes() == before
    elif (tmp_path / "tradeoff.db").exists():
        with sqlite3.connect(tmp_path / "tradeoff.db") as c:
            assert c.execute("select count(*) from studies").fetchone()[0] == 0
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_the_suite_covers_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_a_teacher_cache_that_is_a_file_is_named_before_a_study_is_stored(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").write_text("a file")
    monkeypatch.setenv("TRADEOFF_CACHE", str(tmp_path / "cache"))
    assert main(["search", "--model", "tiny_resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tradeoff: error: the teacher cache ") and str(tmp_path / "cache") in err
    assert "\n" not in err and not (tmp_path / "tradeoff.db").exists()


def test_a_permission_fault_names_its_path_not_the_database():
    import errno

    from tradeoff.storage.urls import path_fault, permanent_fault

    try:
        try:
            raise PermissionError(errno.EACCES, "Permission denied", "/srv/tradeoff-artifacts/teacher.pt")
        except OSError as e:
            raise RuntimeError("upload failed") from e
    except RuntimeError as wrapped:
        fault = path_fault(wrapped)
        assert fault.startswith("cannot write /srv/tradeoff-artifacts/teacher.pt: permission denied")
        assert permanent_fault(wrapped) is None  # not "permission to the study database was denied"
    full = OSError(errno.ENOSPC, "No space left on device", "/tmp/export/model.onnx")
    assert "disk is full" in path_fault(full) and "/tmp/export/model.onnx" in path_fault(full)


@pytest.mark.parametrize(
    "variable, make, message",
    [
        ("TRADEOFF_CACHE", lambda f: f / "sub", "the teacher cache"),
        ("TRADEOFF_RUN_DIR", lambda f: f / "sub", "the run directory"),
        ("HOME", lambda f: f, "the teacher cache"),
    ],
    ids=["cache-under-a-file", "run-dir-under-a-file", "home-is-a-file"],
)
def test_a_folder_of_ours_that_cannot_be_made_is_named_before_a_study_is_stored(
    variable, make, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("a file, not a folder")
    if variable == "HOME":
        monkeypatch.delenv("TRADEOFF_CACHE")
    monkeypatch.setenv(variable, str(make(tmp_path / "file")))
    assert main(["search", "--model", "tiny_resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tradeoff: error: {message} ") and str(tmp_path / "file") in err, err
    assert "\n" not in err and not (tmp_path / "tradeoff.db").exists()


@pytest.mark.parametrize("value", ["big", "0", "-4M", "nan", "inf"])
def test_a_target_cache_that_is_not_a_size_is_named_before_a_study_is_stored(
    value, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADEOFF_LLC", value)
    assert main(["search", "--model", "tiny_resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tradeoff: error: TRADEOFF_LLC={value!r} is not a cache size")
    assert "\n" not in err and not (tmp_path / "tradeoff.db").exists()
