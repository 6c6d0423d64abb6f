"""End-to-end: the real `tradeoff` command in a subprocess, on a real SQLite file."""

from __future__ import annotations

import os

import optuna
import pytest
import torch
from conftest import QUICKER
from conftest import run_tradeoff as tradeoff  # the real command in a subprocess

from tradeoff.storage import open_storage

# one value per knob: the per-layer allocation is covered by the default run below and its own tests
QUICK = [
    *("--granularity", "global", "--model", "tiny_resnet", "--finetune-steps", "20"),
    *("--latency-repeats", "5", "--sampler", "tpe"),
]


def complete_trials(url: str) -> int:
    """Measured plans the budget counts (the queued other bit-widths of a new structure are not)."""
    from tradeoff.search.study.worker import counts

    storage = open_storage(url, heartbeat_interval=None)
    return counts(optuna.load_study(study_name="tradeoff", storage=storage))[0]


def test_search_then_front_then_resume(tmp_path, storage_url):
    at = ["--storage", storage_url]
    # (int8 alone: one bit-width variant per trained structure, measured before the run stops)
    r = tradeoff("search", *at, "--n-trials", "3", *QUICK, "--space", "weight_bits=32,8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tradeoff-artifacts").is_dir()
    assert "[3/3] trial #2" in r.stderr and "front:" in r.stderr
    assert complete_trials(storage_url) == 3

    front = tradeoff("front", *at, cwd=tmp_path)
    assert front.returncode == 0, front.stderr
    assert "#0 (baseline)" in front.stdout or "(x" in front.stdout
    # the 3 measured plans and the bit-width variants of their trained structures, which a run
    # measures before it stops (cheap: no fine-tune), so none is left queued
    study = optuna.load_study(
        study_name="tradeoff", storage=open_storage(storage_url, heartbeat_interval=None)
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert f"Pareto-optimal of {len(done)} complete trials" in front.stdout
    assert not [
        t for t in study.trials if t.user_attrs.get("role") == "sibling" and t.state.name == "WAITING"
    ]

    # resume: no search options needed, trials are added to the same study
    again = tradeoff("search", *at, "--n-trials", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming study 'tradeoff'" in again.stderr
    assert complete_trials(storage_url) == 5

    # the same study with another configuration is refused, and nothing is lost
    clash = tradeoff("search", *at, "--n-trials", "1", "--model", "resnet18", cwd=tmp_path)
    assert clash.returncode == 2
    assert "exists with a different configuration: model" in clash.stderr
    assert complete_trials(storage_url) == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["search", "--data", "mnist"],
            "--data mnist: no such folder, and not a bundled task (digits, fashion-mnist)",
        ),
        (["search", "--storage", "not a url"], "malformed storage URL"),
        (["search", "--storage", "postgresql://bob@127.0.0.1:9/x"], "cannot connect to the study database"),
        (
            ["search", "--storage", "postgresql://bob:hunter2@127.0.0.1:9/x"],
            "carries a password on the command line",
        ),
        (["search", "--n-trials", "0"], "must be a positive whole number"),
        (["search", "--n-trials", "-3"], "must be a positive whole number"),
        (["search", "--min-accuracy", "1.2"], "impossible constraint --min-accuracy"),
        (["search", "--max-size-mb", "-1"], "impossible constraint --max-size-mb"),
        (["search", "--space", "prune_ratio=0.5:1.5"], "prune_ratio"),
        (["search", "--objectives", "accuracy,speed"], "unknown objective 'speed'"),
        (["front", "--study-name", "nope"], "no study named 'nope'"),
    ],
)
def test_bad_input_gets_one_line_and_a_non_zero_exit(tmp_path, args, message):
    r = tradeoff(*args, cwd=tmp_path, timeout=60)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr and "hunter2" not in r.stderr + r.stdout


def test_help_explains_every_option(tmp_path):
    r = tradeoff("search", "--help", cwd=tmp_path)
    assert r.returncode == 0
    for option in (
        "--storage",
        "--study-name",
        "--n-trials",
        "--max-latency-ms",
        "--space",
        "--target",
        "--device",
    ):
        assert option in r.stdout


def test_scalarized_search_minimises_the_weighted_cost(tmp_path):
    import optuna

    from tradeoff.search.views.cost import cost

    weights = {"accuracy": 0.5, "size": 0.3, "latency": 0.2}
    text = ",".join(f"{k}={v}" for k, v in weights.items())
    r = tradeoff(
        "search", "--n-trials", "6", *QUICK, "--space", "weight_bits=32,8", "--scalarize", text, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}")
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] and study.metric_names == ["cost"]
    from tradeoff.search.study.study import stored_config, study_sampler

    assert isinstance(study_sampler(stored_config(study._storage, "tradeoff")), optuna.samplers.TPESampler)
    base = study.user_attrs["tradeoff:baseline"]
    from tradeoff.search.study.worker import budgeted

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sum(budgeted(t) for t in complete) == 6
    for t in complete:
        assert t.values[0] == pytest.approx(cost(t.user_attrs, base, weights))
    assert complete[0].values[0] == pytest.approx(0.5)  # the baseline: 0 points + 0.3 + 0.2
    # the figures are all still there, so the front and select work on a scalarized study too
    sel = tradeoff("select", "--weights", text, cwd=tmp_path)
    assert sel.returncode == 0, sel.stderr
    # the cheapest trial is Pareto-optimal (non-negative weights), so select ranks it first
    best = min(
        (t for t in complete if "duplicate_of" not in t.user_attrs), key=lambda t: (t.values[0], t.number)
    )
    assert sel.stdout.splitlines()[1].split()[1] == f"#{best.number}"

    bad = tradeoff("search", "--n-trials", "1", "--scalarize", "accuracy=1", cwd=tmp_path)
    assert bad.returncode == 2 and "different configuration: scalarize" in bad.stderr


def test_the_sampler_is_chosen_stored_printed_and_front_works(tmp_path):
    """`--sampler nsga2` with a population of 4: the start design is one generation, then
    NSGA-II's children; the sampler line is printed and stored, and `front` reads the study."""
    r = tradeoff(
        "search", "--n-trials", "7", *QUICKER, "--sampler", "nsga2", "--population-size", "4", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "sampler nsga2: population 4" in r.stderr
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}")
    assert study.user_attrs["tradeoff:sampler"].startswith("sampler nsga2")
    roles = [t.user_attrs.get("role") for t in study.trials]
    assert roles[:5] == ["baseline"] + ["single-technique"] * 4 and None in roles  # NSGA-II's own children
    front = tradeoff("front", cwd=tmp_path)
    assert front.returncode == 0 and "Pareto-optimal" in front.stdout, front.stderr
    again = tradeoff("search", "--n-trials", "1", *QUICKER, cwd=tmp_path)
    assert again.returncode == 2 and "sampler (stored 'nsga2', given 'tpe')" in again.stderr


def test_the_kept_models_flag_has_its_own_name_and_the_old_one_still_works(capsys):
    from tradeoff.search.cli import _given_config, build_parser

    args = build_parser().parse_args(["search", "--keep-models", "all"])
    assert _given_config(args)["keep_models"] == "all" and capsys.readouterr().err == ""
    args = build_parser().parse_args(["search", "--keep-weights", "none"])  # its name until 2026-12
    assert _given_config(args)["keep_models"] == "none"
    assert capsys.readouterr().err.strip() == (
        "tradeoff: note: --keep-weights is now --keep-models "
        "(the old name is accepted until the next release)"
    )
    assert "--keep-weights" not in build_parser().format_help()
    with pytest.raises(SystemExit):  # its choices are checked as the new flag's are
        build_parser().parse_args(["search", "--keep-weights", "some"])


def test_a_search_with_depth_drops_blocks_and_names_them_in_front_and_export(tmp_path, sqlite_url):
    """block_drop is searched where --space names it; the plan in words, the front and the
    exported record name the blocks dropped (tiny_resnet has one: layer1.0). SQLite only: the
    storage does not meet the knob."""
    storage_url = sqlite_url
    at = ["--storage", storage_url]
    r = tradeoff("search", *at, "--n-trials", "2", *QUICK, "--space", "block_drop=0,1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(
        study_name="tradeoff", storage=open_storage(storage_url, heartbeat_interval=None)
    )
    dropped = [t for t in study.trials if t.user_attrs.get("facts", {}).get("dropped_blocks")]
    assert dropped and all(t.user_attrs["facts"]["dropped_blocks"] == ["layer1.0"] for t in dropped)
    assert all("block_drop=1 (layer1.0)" in t.user_attrs["plan_text"] for t in dropped)
    front = tradeoff("front", *at, cwd=tmp_path)
    rows = [line for line in front.stdout.splitlines() if "block_drop" in line]
    assert all("block_drop=1 (layer1.0)" in line for line in rows)  # front rows name the block too
    out = tradeoff("export", *at, "--trial", str(dropped[0].number), "--output", "out", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    import json

    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["plan_text"].startswith("block_drop=1 (layer1.0)")
    assert record["plan"]["block_drop"] == 1


def test_commands_that_run_models_take_their_share_of_the_cores(tmp_path, monkeypatch):
    """export, verify and profile run models: each registers as a tradeoff process and takes its
    share of the cores beside the others (a search does the same around its teacher and trials);
    a command that runs none leaves torch alone."""
    from tradeoff.search import cli
    from tradeoff.search.study.worker import available_cores

    monkeypatch.setenv("TRADEOFF_RUN_DIR", str(tmp_path))
    (tmp_path / str(os.getppid())).touch()  # another tradeoff process on this host, alive
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(7)
        with cli._cores("export"):
            assert torch.get_num_threads() == max(1, available_cores() // 2)
            assert sorted(os.listdir(tmp_path)) == sorted([str(os.getppid()), str(os.getpid())])
        # unregistered on the way out, and torch's threads as the caller had them
        assert os.listdir(tmp_path) == [str(os.getppid())] and torch.get_num_threads() == 7
        with cli._cores("front"):
            assert torch.get_num_threads() == 7 and os.listdir(tmp_path) == [str(os.getppid())]
        # a process registered already (a test process, as tests/conftest.py registers them) stays so
        (tmp_path / str(os.getpid())).touch()
        with cli._cores("verify"):
            assert torch.get_num_threads() == max(1, available_cores() // 2)
        assert sorted(os.listdir(tmp_path)) == sorted([str(os.getppid()), str(os.getpid())])
    finally:
        torch.set_num_threads(before)
