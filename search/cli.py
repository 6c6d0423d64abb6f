"""The ``tradeoff`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from search.errors import UsageError
from spaces import KNOBS, PlanError, SpaceError
from storage import DEFAULT_URL, ENV_ARTIFACTS, ENV_URL, StorageError

DEFAULT_STUDY = "tradeoff"
DEFAULT_N_TRIALS = 40


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive whole number")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _space_entry(text: str) -> tuple[str, dict[str, Any]]:
    """KNOB=LOW:HIGH[:STEP], KNOB=VALUE (fixed) or KNOB=A,B,C (choices)."""
    name, sep, spec = text.partition("=")
    if not sep or not spec:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KNOB=LOW:HIGH[:STEP], KNOB=VALUE or KNOB=A,B,C")
    try:
        if "," in spec:
            return name, {"choices": [float(v) for v in spec.split(",")]}
        parts = [float(v) for v in spec.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: bounds must be numbers") from None
    if len(parts) == 1:
        return name, {"low": parts[0], "high": parts[0], "step": None}
    if len(parts) in (2, 3):
        return name, {"low": parts[0], "high": parts[1], "step": parts[2] if len(parts) == 3 else None}
    raise argparse.ArgumentTypeError(f"{text!r}: expected KNOB=LOW:HIGH[:STEP]")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other error here
        self.exit(2, f"{self.prog}: error: {message}\n")


def _storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        help=f"study database URL (default: ${ENV_URL}, else {DEFAULT_URL} in the working directory); "
        "e.g. postgresql+psycopg://user@host:5432/db",
    )
    p.add_argument(
        "--study-name", default=DEFAULT_STUDY, help=f"name of the study (default: {DEFAULT_STUDY})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tradeoff",
        description="Multi-objective search for neural-network compression plans: a Pareto front of "
        "accuracy, size, latency and energy, kept in an Optuna study database.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser(
        "search",
        help="create or resume a study and run trials",
        description="Create the study (or resume it: an existing study keeps its stored configuration) "
        "and run --n-trials more trials. Options that define the search are stored with a new study; "
        "giving one that differs from a resumed study's is an error.",
    )
    _run_args(s, f"trials to run in this invocation (default: {DEFAULT_N_TRIALS})", DEFAULT_N_TRIALS)
    _config_args(s)

    c = sub.add_parser(
        "create",
        help="create a study for many workers: its configuration, teacher and baseline",
        description="Create the study with its configuration and trial budget, train (or fetch from the "
        "cache) the teacher and put it in the artifact store, and measure the uncompressed baseline. "
        "Then start `tradeoff worker` processes, on any machine that reaches the database and the "
        "artifact store.",
    )
    _run_args(
        c,
        f"the study's trial budget: workers stop at this many complete trials (default: {DEFAULT_N_TRIALS})",
        DEFAULT_N_TRIALS,
    )
    _config_args(c)

    w = sub.add_parser(
        "worker",
        help="join a study made by `tradeoff create` and run trials until its budget is met",
        description="Join an existing study by name and storage URL and run its trials (its stored "
        "configuration, its teacher) until the study's budget is met, --n-trials is met, or the worker "
        "is stopped: SIGINT/SIGTERM once finishes the current trial, twice fails it; either way no "
        "trial is left running and the exit status is 0.",
    )
    _run_args(w, "trials this worker runs at most (default: until the study's budget is met)", None)

    f = sub.add_parser(
        "front",
        help="show the Pareto-optimal trials against the baseline",
        description="Print the Pareto-optimal trials: each figure and its change against "
        "the baseline (accuracy in points, the others as ratios).",
    )
    _storage_args(f)

    sel = sub.add_parser(
        "select",
        help="rank the feasible Pareto-optimal trials by a weighted cost",
        description="Rank the Pareto-optimal trials that meet the constraints by the weighted cost "
        "L = sum of weight x term, each term normalised against the baseline: accuracy as points of "
        "drop, size/latency/energy (and params/flops) as ratios to the baseline. Lower is better; "
        "every term is printed so you can see why the winner won.",
    )
    _storage_args(sel)
    _select_args(sel)
    sel.add_argument("--limit", type=_positive_int, default=10, help="rows to print (default: 10)")

    r = sub.add_parser(
        "report",
        help="write a self-contained HTML report of the front, and a PNG of its main plot",
        description="Write a self-contained HTML file (Plotly, JavaScript inlined): every pair of the "
        "study's figures with the baseline and single-technique points marked and dominated trials "
        "greyed, and a table of the front; plus a PNG of accuracy against size beside it.",
    )
    _storage_args(r)
    r.add_argument(
        "--output",
        default="report.html",
        help="HTML file to write (default: report.html); the PNG goes beside it with the same name",
    )

    e = sub.add_parser(
        "export",
        help="rebuild one trial's model, re-measure it, test it, and write it as a deployable directory",
        description="Rebuild the chosen trial's model from its stored plan (the runner's own code), "
        "re-measure it, evaluate it once on the held-out test split and write DIR: model.pt "
        "(TorchScript), model.onnx (where it exports cleanly), plan.json and record.json. Choose the "
        "trial with --trial N, or with the same weights and constraints as `tradeoff select`.",
    )
    _storage_args(e)
    e.add_argument("--output", "-o", required=True, help="directory to write (must not exist, see --force)")
    e.add_argument("--trial", type=int, help="trial number to export (default: the top of `select`)")
    _select_args(e)
    e.add_argument("--force", action="store_true", help="replace an existing export directory")
    e.add_argument(
        "--artifacts",
        help=f"the study's artifact store, where its teacher is (default: ${ENV_ARTIFACTS}, else "
        "./tradeoff-artifacts)",
    )
    e.add_argument("--device", default="cpu", help="device for the rebuild's fine-tuning (default: cpu)")

    v = sub.add_parser(
        "verify",
        help="load an exported directory and check it against its record",
        description="Check every file of an export against its SHA-256, load the model without this "
        "package's classes, re-run the test split and compare accuracy, output shape and the ONNX "
        "twin with the record. Exit 1 when something does not hold.",
    )
    v.add_argument("directory", help="a directory written by `tradeoff export`")

    d = sub.add_parser(
        "dashboard",
        help="open the study in optuna-dashboard",
        description="Serve optuna-dashboard on the study's storage and artifact store.",
    )
    d.add_argument(
        "--storage",
        help=f"study database URL (default: ${ENV_URL}, else {DEFAULT_URL} in the working directory)",
    )
    d.add_argument("--artifacts", help="artifact store to browse (default: as for search)")
    d.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    d.add_argument("--port", type=_positive_int, default=8080, help="port (default: 8080)")
    return parser


def _select_args(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--weights",
        help="cost weights, e.g. accuracy=0.6,size=0.2,latency=0.1,energy=0.1 (the default); names: "
        "accuracy, size, latency, energy, params, flops",
    )
    s.add_argument("--max-latency-ms", type=_number, help="only trials with latency_ms <= this")
    s.add_argument("--max-size-mb", type=_number, help="only trials with size <= this x 10^6 bytes")
    s.add_argument("--max-energy-mj", type=_number, help="only trials with energy_mj <= this")
    s.add_argument("--min-accuracy", type=_number, help="only trials with validation accuracy (0-1) >= this")


def _run_args(s: argparse.ArgumentParser, n_trials_help: str, n_trials_default: int | None) -> None:
    _storage_args(s)
    s.add_argument("--n-trials", type=_positive_int, default=n_trials_default, help=n_trials_help)
    s.add_argument(
        "--artifacts",
        help=f"artifact store for the teacher: a directory every worker reads, or s3://BUCKET "
        f"(pip install 'tradeoff[s3]') (default: ${ENV_ARTIFACTS}, else ./tradeoff-artifacts)",
    )
    s.add_argument(
        "--device",
        default=None,
        help="device for training and fine-tuning (default: cuda if available, else cpu)",
    )
    s.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: the cores divided among the tradeoff processes running on this "
        "host, re-read before each trial); recorded with each latency",
    )
    s.add_argument(
        "--heartbeat-interval",
        type=_positive_int,
        default=60,
        help="seconds between a running trial's heartbeats (default: 60)",
    )
    s.add_argument(
        "--grace-period",
        type=_positive_int,
        default=None,
        help="seconds without a heartbeat after which a trial is failed and retried by another worker "
        "(default: twice the interval)",
    )


def _config_args(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("search configuration (stored with the study)")
    g.add_argument(
        "--data",
        "--task",
        dest="task",
        help="the data: digits (bundled, the default), an image folder (one sub-folder per class, "
        "optionally inside train/ val/ test/), or a plug-in package.module:function returning "
        "(train, val, test)",
    )
    g.add_argument(
        "--model",
        help="model to compress: a torchvision classification model by name (resnet18, the default, "
        "mobilenet_v2, efficientnet_b0, ...), tiny_resnet for quick tries, or a plug-in "
        "package.module:function returning an nn.Module",
    )
    g.add_argument(
        "--checkpoint",
        help="trained weights for --model (a state dict saved with torch.save; loaded weights-only): "
        "the teacher, instead of training one",
    )
    g.add_argument(
        "--image-size",
        type=_positive_int,
        help="image folders: side in pixels after resize + crop (default: 64)",
    )
    g.add_argument(
        "--normalize",
        choices=("data", "imagenet"),
        help="image folders: per-channel statistics of the training split (data, the default) or "
        "ImageNet's (for ImageNet-trained checkpoints)",
    )
    g.add_argument(
        "--objectives",
        help="comma-separated figures to optimise (default: accuracy,size_bytes,latency_ms,energy_mj; "
        "also params, flops)",
    )
    g.add_argument("--max-latency-ms", type=_number, help="constraint: latency_ms <= this")
    g.add_argument("--max-size-mb", type=_number, help="constraint: size_bytes <= this x 10^6")
    g.add_argument("--max-energy-mj", type=_number, help="constraint: energy_mj <= this")
    g.add_argument("--min-accuracy", type=_number, help="constraint: validation accuracy (0-1) >= this")
    knobs = ", ".join(f"{k.name} ({k.help})" for k in KNOBS.values())
    g.add_argument(
        "--space",
        type=_space_entry,
        action="append",
        metavar="KNOB=LOW:HIGH[:STEP]",
        help=f"narrow or fix a knob (repeatable). Knobs: {knobs}",
    )
    g.add_argument("--target", help="where latency and energy are measured: cpu (default) or cuda[:N]")
    g.add_argument(
        "--finetune-steps", type=int, help="fine-tuning batches after a structural change (default: 150)"
    )
    g.add_argument(
        "--student-steps",
        type=int,
        help="distillation batches for a student trained from scratch (default: 400)",
    )
    g.add_argument(
        "--prune-mode",
        choices=("structured", "unstructured"),
        help="structured: remove whole channels (default); unstructured: zero single weights "
        "(params then counts non-zeros and size_bytes a sparse encoding)",
    )
    g.add_argument(
        "--teacher-epochs", type=_positive_int, help="teacher training epochs (default: per model)"
    )
    g.add_argument("--latency-repeats", type=int, help="timed runs per latency measurement (default: 50)")
    g.add_argument(
        "--population-size",
        type=int,
        help="NSGA-II population (default: fitted to the first run's --n-trials)",
    )
    g.add_argument("--seed", type=int, help="seed of teacher training and fine-tuning (default: 0)")
    g.add_argument(
        "--scalarize",
        metavar="WEIGHTS",
        help="search one objective, the weighted cost of `tradeoff select` (e.g. "
        "accuracy=0.6,size=0.2,latency=0.1,energy=0.1), with TPE instead of NSGA-II",
    )


def _given_config(args: argparse.Namespace) -> dict[str, Any]:
    """The search settings the user typed; the rest come from the stored study or defaults."""
    given: dict[str, Any] = {}
    for name in (
        "task",
        "model",
        "checkpoint",
        "image_size",
        "normalize",
        "target",
        "prune_mode",
        "student_steps",
        "finetune_steps",
        "teacher_epochs",
        "latency_repeats",
        "population_size",
        "seed",
    ):
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    if args.objectives:
        given["objectives"] = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    constraints = {
        n: getattr(args, n) for n in ("max_latency_ms", "max_size_mb", "max_energy_mj", "min_accuracy")
    }
    if any(v is not None for v in constraints.values()):
        given["constraints"] = {k: v for k, v in constraints.items() if v is not None}
    if args.space:
        given["space"] = dict(args.space)
    if args.scalarize:
        from search.cost import parse_weights

        given["scalarize"] = parse_weights(args.scalarize)
    return given


def _storage_url(args: argparse.Namespace) -> str:
    """The storage URL; one typed with a password on the command line is refused (every user of
    the machine can read a command line), and the error does not repeat it."""
    from storage import ENV_URL_FILE, redact, resolve_url

    if args.storage and redact(args.storage) != args.storage:
        raise UsageError(
            f"--storage {redact(args.storage)} carries a password on the command line; put the URL in "
            f"${ENV_URL} or in a file named by ${ENV_URL_FILE}"
        )
    return resolve_url(args.storage)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, *, mode: str) -> int:
    """search: create or resume, run --n-trials more. create: make the study, its teacher and its
    baseline. worker: join an existing study and run trials until its budget is met."""
    import contextlib

    import optuna
    import torch

    from search.records import BUDGET_ATTR
    from search.report import format_front, progress_line
    from search.runner import Runner
    from search.study import open_study
    from search.tasks import task_for
    from search.teacher import ensure_teacher
    from search.worker import Stopper, counts, host_share, run_worker
    from storage import open_artifact_store, open_storage, redact

    torch.set_flush_denormal(True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device is available here; use --device cpu")

    url = _storage_url(args)
    storage = open_storage(
        url,
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
    )
    given = {} if mode == "worker" else _given_config(args)
    tasks = []

    def prepare(cfg) -> None:  # data and model checked before a new study is stored
        tasks.append(task_for(cfg, log=_log))

    study, config, created = open_study(
        storage, args.study_name, given, n_trials=args.n_trials, create=(mode != "worker"), prepare=prepare
    )
    if mode == "create" and not created:
        raise UsageError(
            f"study {args.study_name!r} already exists; start workers on it, or choose another --study-name"
        )
    if config.target.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"the study measures on {config.target}, but no CUDA device is available here")
    complete, _ = counts(study)
    if mode == "search":
        budget, n_trials = complete + args.n_trials, args.n_trials
    elif mode == "create":
        study.set_user_attr(BUDGET_ATTR, args.n_trials or 40)
        budget, n_trials = 1, 1  # the baseline
    else:
        budget = study.user_attrs.get(BUDGET_ATTR)
        if budget is None:
            raise UsageError(
                f"study {args.study_name!r} has no trial budget; it was not made by `tradeoff create`"
            )
        n_trials = args.n_trials
    _log(
        f"{'created' if created else 'joined' if mode == 'worker' else 'resuming'} study "
        f"{args.study_name!r} in {redact(url)} ({complete} complete trials, budget {budget})"
    )
    task = tasks[0] if tasks else task_for(config, log=_log)
    teacher = ensure_teacher(
        study, task, open_artifact_store(args.artifacts), device=device, train=(mode != "worker"), log=_log
    )
    runner = Runner(config, task, teacher, device=device)

    start, done = time.perf_counter(), 0
    total = n_trials or max(0, budget - complete)

    def progress(trial: optuna.trial.FrozenTrial) -> None:
        nonlocal done
        done += 1
        _log(progress_line(study, trial, done=done, total=total, elapsed_s=time.perf_counter() - start))

    with contextlib.ExitStack() as stack:
        share = stack.enter_context(host_share())
        stopper = stack.enter_context(Stopper())

        def set_threads() -> None:
            torch.set_num_threads(args.threads or share())

        run_worker(
            study,
            storage,
            runner,
            budget=budget,
            n_trials=n_trials,
            stopper=stopper,
            on_trial=progress,
            before_trial=set_threads,
        )
    if stopper.requested:
        _log("stopped: no trial of this worker is left running")
    if mode != "worker":
        print(format_front(study))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    return _run(args, mode="search")


def cmd_create(args: argparse.Namespace) -> int:
    return _run(args, mode="create")


def cmd_worker(args: argparse.Namespace) -> int:
    return _run(args, mode="worker")


def cmd_front(args: argparse.Namespace) -> int:
    from search.report import format_front

    study, _ = _load_study(args)
    print(format_front(study))
    return 0


def _load_study(args: argparse.Namespace):
    import optuna

    from search.study import stored_config
    from storage import open_storage

    storage = open_storage(_storage_url(args), heartbeat_interval=None)
    config = stored_config(storage, args.study_name)
    if config is None:
        raise UsageError(f"no study named {args.study_name!r} in this storage; run `tradeoff search` first")
    return optuna.load_study(study_name=args.study_name, storage=storage), config


def _select_constraints(args: argparse.Namespace) -> dict[str, float]:
    """The selection constraints the user typed (`select` and `export`)."""
    from search.cost import FLAG_CONSTRAINTS

    return {n: getattr(args, n) for n in FLAG_CONSTRAINTS if getattr(args, n) is not None}


def _ranking(args: argparse.Namespace, study, config):
    from search.cost import check_constraints, merge_constraints, parse_weights, rank
    from search.report import baseline_of

    weights = parse_weights(args.weights)
    # the study's own constraints always hold; the ones typed now can only tighten them
    constraints = merge_constraints(config.constraints, check_constraints(_select_constraints(args)))
    baseline = baseline_of(study)
    if baseline is None:
        raise UsageError(f"study {study.study_name!r} has no measured baseline yet; run `tradeoff search`")
    ranked = rank(
        study.get_trials(deepcopy=False),
        baseline,
        weights,
        objectives=config.objectives,
        constraints=constraints,
    )
    return ranked, weights


def cmd_select(args: argparse.Namespace) -> int:
    from search.cost import format_ranking

    study, config = _load_study(args)
    ranked, weights = _ranking(args, study, config)
    print(format_ranking(ranked, weights, limit=args.limit))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import os

    from search.report import write_report

    study, _ = _load_study(args)
    parent = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(parent):
        raise UsageError(f"--output {args.output}: the directory {parent} does not exist")
    html, png = write_report(study, args.output)
    _log(f"wrote {html} ({os.path.getsize(html) / 1e6:.1f} MB, self-contained) and {png}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import json

    import optuna
    import torch

    from search.export import check_target, export_trial
    from search.records import DUPLICATE_ATTR, FAIL_ATTR, broken_constraints
    from search.runner import Runner
    from search.tasks import task_for
    from search.teacher import ensure_teacher
    from storage import open_artifact_store

    torch.set_flush_denormal(True)
    check_target(args.output, args.force)  # before any work
    study, config = _load_study(args)
    if args.trial is not None:
        if args.weights or _select_constraints(args):
            raise UsageError("give either --trial or --weights/constraints, not both")
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        if args.trial not in by_number:
            last = max(by_number) if by_number else None
            raise UsageError(
                f"--trial {args.trial}: no such trial in study {args.study_name!r}"
                + (f" (numbers run 0-{last})" if last is not None else " (it has no trials)")
            )
        trial = by_number[args.trial]
        if trial.state != optuna.trial.TrialState.COMPLETE:
            reason = trial.user_attrs.get(FAIL_ATTR)
            raise UsageError(
                f"--trial {args.trial} did not complete ({trial.state.name.lower()}"
                + (f": {reason}" if reason else "")
                + "); pick a complete trial, e.g. from `tradeoff select`"
            )
        if DUPLICATE_ATTR in trial.user_attrs:
            trial = by_number[trial.user_attrs[DUPLICATE_ATTR]]
        broken = broken_constraints(trial)
        if broken:
            _log(
                f"warning: trial #{trial.number} breaks the study's constraints ({', '.join(broken)}); "
                "exporting it because --trial asked for it"
            )
    else:
        ranked, _ = _ranking(args, study, config)
        trial = ranked[0].trial
        _log(f"selected trial #{trial.number} (cost {ranked[0].cost:.4f})")
    task = task_for(config, log=_log)
    teacher = ensure_teacher(study, task, open_artifact_store(args.artifacts), train=False, log=_log)
    runner = Runner(config, task, teacher, device=args.device)
    record = export_trial(study, trial, args.output, runner=runner, force=args.force, log=_log)
    onnx = record["onnx"]
    _log(
        f"wrote {args.output}: {', '.join(record['files'])}, plan.json, record.json"
        + ("" if onnx.get("written") else f" (no ONNX: {onnx['reason']})")
    )
    print(
        json.dumps(
            {
                "trial": record["trial"],
                "plan": record["plan"],
                "test_accuracy": record["test_accuracy"],
                "differences": record["differences"],
            },
            indent=2,
        )
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from search.export import verify

    torch.set_flush_denormal(True)
    problems = verify(args.directory, log=_log)
    for p in problems:
        print(f"tradeoff: verify: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.directory}: verified")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import socket

    from search.dashboard import serve
    from storage import open_artifact_store, open_storage, redact

    url = _storage_url(args)
    storage = open_storage(url, heartbeat_interval=None)
    artifacts = open_artifact_store(args.artifacts)
    with socket.socket() as probe:  # a clear error for a taken port, before the server starts
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.host, args.port))
        except OSError as e:
            raise UsageError(
                f"cannot listen on {args.host}:{args.port}: {e.strerror}; choose another --port"
            ) from None
    _log(f"optuna-dashboard on http://{args.host}:{args.port}/dashboard/ for {redact(url)} (Ctrl-C stops it)")
    serve(storage, host=args.host, port=args.port, artifact_store=artifacts)
    return 0


COMMANDS = {
    "search": cmd_search,
    "create": cmd_create,
    "worker": cmd_worker,
    "front": cmd_front,
    "select": cmd_select,
    "report": cmd_report,
    "export": cmd_export,
    "verify": cmd_verify,
    "dashboard": cmd_dashboard,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, StorageError, SpaceError, PlanError) as e:
        print(f"tradeoff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tradeoff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
