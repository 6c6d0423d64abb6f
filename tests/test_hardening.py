"""Hardening: each test is named after the finding of the hardening issue it covers.

Real parts throughout: the `tradeoff` command in a subprocess where it matters, real SQLite
files, the real PostgreSQL server, real exports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from conftest import QUICKER, run_tradeoff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeoff.search.cli import _finite, _port, _positive_int, _space_entry, main
from tradeoff.search.errors import UsageError
from tradeoff.search.study.config import SearchConfig
from tradeoff.search.views.cost import check_constraints, parse_weights
from tradeoff.search.views.export import ExportError, write_manifest
from tradeoff.search.views.verify import load
from tradeoff.storage import StorageError, open_storage, redact
from tradeoff.storage.urls import permanent_fault


def one_line_error(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def exported(finished_study, tmp_path, monkeypatch, capsys):
    """A fresh export of the finished study's baseline, in a private copy of the study."""
    shutil.copy(finished_study / "tradeoff.db", tmp_path / "tradeoff.db")
    shutil.copytree(finished_study / "tradeoff-artifacts", tmp_path / "tradeoff-artifacts")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRADEOFF_STORAGE", raising=False)
    assert main(["export", "--trial", "0", "--output", "base"]) == 0
    capsys.readouterr()
    return tmp_path / "base"


# -- 1. exports are untrusted --------------------------------------------------------------


def test_finding_1_verify_never_imports_a_module_named_by_the_export(exported, tmp_path):
    marker = tmp_path / "pwned"
    evil = f"open({str(marker)!r}, 'w').write('imported')\ndef splits():\n    pass\ndef net():\n    pass\n"
    (tmp_path / "evil.py").write_text(evil)
    record = json.loads((exported / "record.json").read_text())
    record["config"].update(task="evil:splits", model="evil:net", plugins=["evil"])
    (exported / "record.json").write_text(json.dumps(record))
    (exported / "manifest.json").unlink()
    write_manifest(str(exported))  # a forger rewrites the manifest too: verify must still not run it
    r = run_tradeoff("verify", str(exported), cwd=tmp_path)
    assert "give its data with --data" in one_line_error(r)
    assert not marker.exists()
    exp = load(str(exported))  # loading alone never imports either
    assert exp.record["config"]["task"] == "evil:splits" and not marker.exists()


def test_finding_1_every_file_of_an_export_is_checked(exported, tmp_path, capsys):
    def copy(name):
        shutil.copytree(exported, tmp_path / name)
        return tmp_path / name

    no_plan = copy("no-plan")
    (no_plan / "plan.json").unlink()
    with pytest.raises(ExportError, match="missing plan.json"):
        load(str(no_plan))
    extra = copy("extra")
    (extra / "run_me.py").write_text("print('hi')\n")
    with pytest.raises(ExportError, match="run_me.py, which its manifest does not list"):
        load(str(extra))
    changed = copy("changed-plan")
    (changed / "plan.json").write_text((changed / "plan.json").read_text().replace("32", "31"))
    with pytest.raises(ExportError, match="plan.json does not match its SHA-256"):
        load(str(changed))
    linked = copy("linked")
    (linked / "plan.json").unlink()
    (linked / "plan.json").symlink_to(exported / "plan.json")
    with pytest.raises(ExportError, match="not a plain file"):
        load(str(linked))
    # and the good one verifies, saying which figures it did not re-measure
    capsys.readouterr()
    assert main(["verify", str(exported)]) == 0
    err = capsys.readouterr().err
    assert "SHA-256 checked" in err and "does not re-measure" in err


# -- 2. passwords in every part of a URL ----------------------------------------------------

SECRET_FORMS = [
    "postgresql://bob:hunter2@127.0.0.1:9/x",
    "postgresql://bob:hun@ter2@127.0.0.1:9/x",  # a raw @ in the password
    "postgresql://bob@127.0.0.1:9/x?password=hunter2",
    "postgresql://bob@127.0.0.1:9/x?sslmode=require&sslpassword=hunter2",
    "mysql+pymysql://bob@127.0.0.1:9/x?passwd=hunter2",
]


@pytest.mark.parametrize("url", SECRET_FORMS)
def test_finding_2_every_secret_form_is_redacted(url):
    shown = redact(url)
    assert "hunter2" not in shown and "ter2" not in shown and "***" in shown
    assert (
        redact("postgresql://bob@db/x?sslkey=/keys/client.key")
        == "postgresql://bob@db/x?sslkey=/keys/client.key"
    )
    assert redact("sqlite:////tmp/a@b/x.db") == "sqlite:////tmp/a@b/x.db"


def in_process(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("url", SECRET_FORMS)
@pytest.mark.parametrize("command", ["search", "create", "worker", "front", "select", "report", "dashboard"])
def test_finding_2_a_password_on_the_command_line_is_refused_in_every_form(
    tmp_path, monkeypatch, capsys, url, command
):
    monkeypatch.chdir(tmp_path)
    code, out, err = in_process(capsys, command, "--storage", url)
    assert code == 2 and err.count("\n") == 1 and "carries a password on the command line" in err
    assert "hunter2" not in err + out and "ter2" not in err
    assert not (tmp_path / "tradeoff.db").exists()


@pytest.mark.parametrize("url", SECRET_FORMS)
@pytest.mark.parametrize("command", ["search", "front", "dashboard"])
def test_finding_2_a_password_from_the_environment_never_prints(tmp_path, monkeypatch, capsys, url, command):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADEOFF_STORAGE", url)
    code, out, err = in_process(capsys, command)
    assert code == 2 and err.count("\n") == 1, err  # the database cannot be reached: one line
    assert "hunter2" not in err + out and "ter2" not in err, err


def test_finding_2_the_resuming_line_hides_a_query_password(pg_url, tmp_path):
    url = pg_url.replace("postgres@", "postgres:hunter2@") + "?password=hunter2"
    env = dict(os.environ, PYTHONWARNINGS="ignore", TRADEOFF_STORAGE=url)
    r = subprocess.run(
        [sys.executable, "-m", "tradeoff.search.cli", "search", "--n-trials", "1", *QUICKER],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "created study 'tradeoff' in postgresql+psycopg://postgres:***@" in r.stderr or (
        "created study 'tradeoff' in postgresql://postgres:***@" in r.stderr
    )
    assert "password=***" in r.stderr and "hunter2" not in r.stderr + r.stdout


# -- 3. concurrent runs -------------------------------------------------------------------


def test_finding_3_two_searches_on_a_new_study_each_run_their_own_trials(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("TRADEOFF_STORAGE", None)
    args = [sys.executable, "-m", "tradeoff.search.cli", "search", "--n-trials", "2", *QUICKER]
    procs = [
        subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "Traceback" not in err
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}")
    from tradeoff.search.study.worker import counts

    assert counts(study)[0] == 4  # measured plans (the bit-width variants besides)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_finding_3_many_processes_may_create_the_schema_at_once(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'new.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    code = (
        "import sys; from tradeoff.storage import open_storage; "
        "open_storage(sys.argv[1], heartbeat_interval=None).get_all_studies(); print('ok')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err


# -- 4. storage faults that waiting does not mend --------------------------------------------


def test_finding_4_a_file_that_is_not_a_database_is_one_line_at_once(tmp_path):
    (tmp_path / "notes.db").write_text("my notes, not a database\n" * 100)
    t = time.monotonic()
    r = run_tradeoff("front", "--storage", "sqlite:///notes.db", cwd=tmp_path)
    assert "not a SQLite database" in one_line_error(r)
    assert time.monotonic() - t < 60
    assert (tmp_path / "notes.db").read_text().startswith("my notes")


def test_finding_4_a_read_only_database_is_one_line_and_keeps_its_trials(finished_study, tmp_path):
    shutil.copy(finished_study / "tradeoff.db", tmp_path / "tradeoff.db")
    shutil.copytree(finished_study / "tradeoff-artifacts", tmp_path / "tradeoff-artifacts")
    before = (tmp_path / "tradeoff.db").read_bytes()
    t = time.monotonic()
    r = run_tradeoff(
        "search", "--n-trials", "1", "--storage", "sqlite:///file:tradeoff.db?mode=ro&uri=true", cwd=tmp_path
    )
    assert "read-only" in r.stderr.strip().splitlines()[-1] and r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - t < 120  # not 120 s of "unreachable; retrying" and then a traceback
    assert (tmp_path / "tradeoff.db").read_bytes() == before


@pytest.mark.parametrize(
    "message, cause",
    [
        ("(sqlite3.OperationalError) database or disk is full", "disk of the study database is full"),
        ("could not extend file: No space left on device", "disk of the study database is full"),
        ("(sqlite3.OperationalError) attempt to write a readonly database", "read-only"),
        ("(sqlite3.DatabaseError) file is not a database", "not a SQLite database"),
    ],
)
def test_finding_4_faults_are_classified_not_retried(message, cause):
    import sqlalchemy

    e = sqlalchemy.exc.OperationalError("INSERT", {}, Exception(message))
    assert cause in permanent_fault(e)
    from tradeoff.storage.urls import transient

    assert not transient(e)
    assert transient(sqlalchemy.exc.OperationalError("SELECT", {}, Exception("connection refused")))


# -- 5. every number a user types -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["search", "--space", "prune_ratio=0:0.5:inf"],
        ["search", "--space", "prune_ratio=nan"],
        ["search", "--space", "prune_ratio=0:1e400"],
        ["search", "--space", "weight_bits=8,nan"],
        ["search", "--space", "rank_ratio=0.1,inf"],
        ["search", "--max-size-mb", "inf"],
        ["search", "--max-latency-ms", "nan"],
        ["search", "--min-accuracy", "-inf"],
        ["search", "--n-trials", "1e3"],
        ["search", "--n-trials", "99999999999"],
        ["search", "--scalarize", "accuracy=inf"],
        ["select", "--weights", "accuracy=nan"],
        ["dashboard", "--port", "70000"],
        ["dashboard", "--port", "0"],
        ["dashboard", "--port", "-1"],
    ],
)
def test_finding_5_numbers_that_are_not_finite_or_in_range_are_refused(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRADEOFF_STORAGE", raising=False)
    try:
        code, out, err = in_process(capsys, *args)
    except SystemExit as e:  # argparse's own refusal (our parser prints one line, exit 2)
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "tradeoff.db").exists() or (
        sqlite3.connect(tmp_path / "tradeoff.db").execute("select count(*) from studies").fetchone()[0] == 0
    )


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
NUMBERS = st.one_of(
    # subnormals: the test process flushes them (torch.set_flush_denormal), as every measurement does
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr),
    st.integers(-(10**12), 10**12).map(str),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "0x10", "1_000", " 7 ", ""]),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(TEXT, NUMBERS))
def test_finding_5_number_parsers_give_a_value_or_one_line(text):
    for parse in (_finite, _positive_int, _port):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as e:
            assert "\n" not in str(e)
            continue
        assert np.isfinite(value)
        if parse is _port:
            assert 1 <= value <= 65535
        if parse is _positive_int:
            assert 1 <= value <= 10**9


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["prune_ratio", "rank_ratio", "student_width", "weight_bits", "nope"]),
    st.lists(NUMBERS, min_size=1, max_size=3),
    st.sampled_from([":", ","]),
)
def test_finding_5_a_space_is_refused_or_finite_and_in_range(name, numbers, sep):
    try:
        knob, spec = _space_entry(f"{name}={sep.join(numbers)}")
        config = SearchConfig(space={knob: spec}).validated(n_trials=8)
    except (argparse.ArgumentTypeError, UsageError) as e:
        assert "\n" not in str(e)
        return
    for values in config.space.values():
        flat = values.get("choices", [values.get("low"), values.get("high"), values.get("step")])
        assert all(v is None or np.isfinite(v) for v in flat)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        TEXT,
        st.lists(st.tuples(st.sampled_from(["accuracy", "size", "x"]), NUMBERS)).map(
            lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)
        ),
    )
)
def test_finding_5_weights_and_constraints_are_refused_or_finite(text):
    try:
        weights = parse_weights(text)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert all(np.isfinite(v) and v >= 0 for v in weights.values()) and any(weights.values())
    try:
        bound = float(text) if text.strip() else 1.0
    except ValueError:
        return
    try:
        checked = check_constraints({"max_size_mb": bound})
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert np.isfinite(checked["max_size_mb"]) and checked["max_size_mb"] > 0


# -- 6. images ------------------------------------------------------------------------------


def _folder(root, make, classes=("a", "b"), n=6):
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            make(i, c).save(root / c / f"{i}.png")
    return root


def test_finding_6_16_bit_greyscale_keeps_its_contrast(tmp_path):
    from PIL import Image

    from tradeoff.search.task.data import load_data, to_rgb

    ramp = (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)  # 0 .. 61,380 of 65,535
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        rgb = np.asarray(to_rgb(im, "g16.png"))
        naive = np.asarray(im.convert("RGB"))
    assert (naive == 255).mean() > 0.9  # what PIL's own conversion does: almost all white
    assert (rgb == 255).mean() < 0.01 and rgb.max() == round(61380 / 257) and rgb.min() == 0
    data = load_data(str(_folder(tmp_path / "data", lambda i, c: Image.fromarray(ramp))), image_size=16)
    assert data.train.x.std() > 0.5  # normalised values spread, not one saturated level


def test_finding_6_transparency_cmyk_and_orientation_keep_their_meaning():
    from PIL import Image

    from tradeoff.search.task.data import to_rgb

    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_rgb(clear, "x")).max() == 0  # transparent is background, not red
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.info["transparency"] = 1
    assert np.asarray(to_rgb(palette, "x")).max() == 0
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red in CMYK
    assert tuple(np.asarray(to_rgb(cmyk, "x"))[0, 0]) == (255, 0, 0)
    import io

    tall = Image.new("RGB", (2, 6), (10, 20, 30))
    exif = tall.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees": the camera was held sideways
    buf = io.BytesIO()
    tall.save(buf, format="PNG", exif=exif.tobytes())
    with Image.open(buf) as sideways:
        assert to_rgb(sideways, "x").size == (6, 2)


def test_finding_6_a_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    from PIL import Image

    from tradeoff.search.task.data import load_data

    root = _folder(tmp_path / "data", lambda i, c: Image.new("RGB", (64, 64), (i * 20, 0, 0)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4,096 pixels: a "bomb" here
    with pytest.raises(UsageError, match=r"larger than PIL's decompression-bomb limit") as e:
        load_data(str(root), image_size=16)
    assert str(root) in str(e.value) and "\n" not in str(e.value)


def test_finding_6_fewer_than_two_classes_are_refused(tmp_path, make_folder):
    root = make_folder(tmp_path / "one", classes=("only",))
    r = run_tradeoff("search", "--data", str(root), "--n-trials", "1", cwd=tmp_path)
    assert "needs at least two class sub-folders" in one_line_error(r)
    assert not (tmp_path / "tradeoff.db").exists() or (
        sqlite3.connect(tmp_path / "tradeoff.db").execute("select count(*) from studies").fetchone()[0] == 0
    )


def test_finding_4_a_permanent_fault_while_opening_is_a_storage_error(tmp_path):
    (tmp_path / "x.db").write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StorageError, match="not a SQLite database"):
        open_storage(f"sqlite:///{tmp_path / 'x.db'}").get_all_studies()


# -- 7. recovery ------------------------------------------------------------------------------


def _start_search(tmp_path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("TRADEOFF_STORAGE", None)
    args = [sys.executable, "-m", "tradeoff.search.cli", "search", *QUICKER, *extra]
    return subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _running(tmp_path, number: int, timeout: float = 300) -> optuna.trial.FrozenTrial:
    """Trial ``number`` once it runs with its plan stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (tmp_path / "tradeoff.db").exists():
            try:
                study = optuna.load_study(
                    study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}"
                )
                trials = study.get_trials(deepcopy=False)
            except Exception:  # noqa: BLE001 - the study is still being created
                trials = []
            for t in trials:
                if (
                    t.number == number
                    and t.state == optuna.trial.TrialState.RUNNING
                    and "plan" in t.user_attrs
                ):
                    # read again: the storage reads params and attrs in separate queries, so the
                    # read that first saw the plan may hold the params of a moment before it
                    # (the plan is written after every param)
                    return study.get_trials(deepcopy=False)[number]
        time.sleep(0.2)
    raise AssertionError(f"trial #{number} never ran")


def _trials(tmp_path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}").trials


def test_finding_7_a_killed_search_is_failed_at_once_on_resume_with_its_reason(tmp_path):
    import signal

    # --sampler tpe: trial 1 is the single-technique student at width 0.5, distilled for 5,000 steps
    victim = _start_search(tmp_path, "--n-trials", "3", "--student-steps", "5000", "--sampler", "tpe")
    killed = _running(tmp_path, 1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    t = time.monotonic()
    r = run_tradeoff("search", "--n-trials", "1", cwd=tmp_path)  # the next seeded plan: a quick prune
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t < 100  # not the 120 s grace period: its process is known to be gone
    trials = _trials(tmp_path)
    failed = trials[killed.number]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert (
        failed.user_attrs["fail_reason"].startswith("its worker")
        and "ended without finishing" in (failed.user_attrs["fail_reason"])
    )
    retries = [x for x in trials if x.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].user_attrs["role"] == "single-technique" and "fail_reason" not in retries[0].user_attrs


def test_finding_7_a_seeded_plan_interrupted_twice_is_tried_again_once(tmp_path):
    import signal

    proc = _start_search(tmp_path, "--n-trials", "3", "--student-steps", "5000", "--sampler", "tpe")
    interrupted = _running(tmp_path, 1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    trials = _trials(tmp_path)
    assert trials[interrupted.number].state == optuna.trial.TrialState.FAIL
    assert trials[interrupted.number].user_attrs["fail_reason"] == "the worker was stopped during the trial"
    retries = [x for x in trials if x.user_attrs.get("retry_of") == interrupted.number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.WAITING
    assert retries[0].params == interrupted.params and retries[0].user_attrs["role"] == "single-technique"
