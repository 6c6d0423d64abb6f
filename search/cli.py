"""The ``tradeoff`` command line: parsing only; ``commands.py`` does the work."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from tradeoff.search.study.sampler import SAMPLERS
from tradeoff.search.task.data import NORMALIZATIONS
from tradeoff.search.trial.figures import FIGURES, by_constraint, by_weight
from tradeoff.search.trial.kept import KEEP_MODELS
from tradeoff.spaces import KNOBS
from tradeoff.spaces.allocation import GRANULARITIES
from tradeoff.spaces.runtimes import RUNTIMES
from tradeoff.storage import DEFAULT_URL, ENV_ARTIFACTS, ENV_URL, TradeoffError

DEFAULT_STUDY = "tradeoff"
DEFAULT_N_TRIALS = 40


def _whole(text: str, *, high: int, what: str) -> int:
    """A whole number from 1 to ``high``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive whole number")
    if value > high:
        raise argparse.ArgumentTypeError(f"{value} is out of range: {what} is 1 to {high}")
    return value


def _positive_int(text: str) -> int:
    """A count: 1 to 10^9 (a bigger one is a typo, not a plan)."""
    return _whole(text, high=10**9, what="a count")


def _port(text: str) -> int:
    return _whole(text, high=65535, what="a TCP port")


def _finite(text: str) -> float:
    """A finite number (inf, nan and overflowing literals are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _study_name(text: str) -> str:
    """A study name the database stores and every view prints: non-empty, UTF-8, no control
    characters, at most 512 characters (Optuna's column)."""
    import unicodedata

    if not text.strip():
        raise argparse.ArgumentTypeError("the study name is empty; give one, e.g. --study-name tradeoff")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"the study name {text.encode('utf-8', 'backslashreplace').decode()!r} is not valid UTF-8"
        ) from None
    if any(unicodedata.category(c) in ("Cc", "Cs", "Cf") for c in text):
        raise argparse.ArgumentTypeError(f"the study name {text!r} holds control characters")
    if len(text) > 512:
        raise argparse.ArgumentTypeError(f"the study name is {len(text)} characters; at most 512")
    return text


def _space_entry(text: str) -> tuple[str, dict[str, Any]]:
    """KNOB=LOW:HIGH[:STEP], KNOB=VALUE (fixed) or KNOB=A,B,C (choices); every number finite."""
    name, sep, spec = text.partition("=")
    if not sep or not spec or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KNOB=LOW:HIGH[:STEP], KNOB=VALUE or KNOB=A,B,C")
    name = name.strip()
    try:
        if "," in spec:
            return name, {"choices": [_finite(v) for v in spec.split(",")]}
        parts = [_finite(v) for v in spec.split(":")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: bounds must be finite numbers") from None
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
        "e.g. postgresql+psycopg://user@host:5432/db, or grpc://host:13000 for a `tradeoff proxy`",
    )
    p.add_argument(
        "--study-name",
        type=_study_name,
        default=DEFAULT_STUDY,
        help=f"name of the study (default: {DEFAULT_STUDY})",
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
    _run_args(
        s,
        f"new plans to measure in this invocation, the baseline of a new study included (default: "
        f"{DEFAULT_N_TRIALS}; a plan proposed again, a plan pruned before training and the bit-width "
        "variants of a trained structure are not counted)",
        DEFAULT_N_TRIALS,
    )
    _stop_arg(s)
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
        f"the study's budget: workers stop at this many measured plans, the baseline included, as for "
        f"`search` (default: {DEFAULT_N_TRIALS}); the bit-width variants of trained structures are "
        "measured besides",
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
    _run_args(w, "plans this worker measures at most (default: until the study's budget is met)", None)
    _stop_arg(w)

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
    r.add_argument(
        "--artifacts", help="the study's artifact store, for its sensitivity table (default: as for search)"
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
        "--finetune-steps",
        type=lambda text: _whole(text, high=10**7, what="a number of fine-tuning batches"),
        default=0,
        metavar="N",
        help="train the chosen plan N batches more before it is written, from the study's kept models, "
        "distilling from the teacher on batches of the whole training split; the record keeps "
        "both accuracies, search-time and final, with their 95%% intervals (default: 0, the search-time "
        "model)",
    )
    e.add_argument(
        "--front",
        action="store_true",
        help="export every trial of the front, each into OUTPUT/trial-N, with OUTPUT/front.json (with "
        "--finetune-steps: both accuracies of each, and how well the search-time accuracy ranks the final)",
    )
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
    v.add_argument(
        "--data",
        help="the data to check the test accuracy on (default: the export's, when it is a bundled task; "
        "verify never opens a path or imports a plug-in named inside an export)",
    )
    v.add_argument(
        "--data-root",
        metavar="DIR",
        help="fashion-mnist: the folder holding its IDX files (default: /usr/share/datasets/fashion-mnist)",
    )

    sen = sub.add_parser(
        "sensitivity",
        help="print the study's sensitivity table: each layer group compressed alone",
        description="Print the sensitivity table a study that allocates per layer measured once: for every "
        "channel group, factorable and quantizable layer, the effect of compressing it alone (the better "
        "predictor of distillation loss and accuracy drop), with its share of parameters, MACs and latency.",
    )
    _storage_args(sen)
    sen.add_argument("--artifacts", help="the study's artifact store (default: as for search)")
    sen.add_argument("--json", action="store_true", help="print the whole table as JSON")

    pr = sub.add_parser(
        "profile",
        help="the space before any fine-tune: figures of its smallest, a middle and its largest plan",
        description="Build the smallest, a middle and the largest plan of the search space from the model "
        "with fresh weights (no teacher, no training), deploy them in the study's runtime and print their "
        "size, parameters, MACs, memory and latency; then a random sample of plans, and the share of it "
        "that meets each constraint. Exits 2 when no plan of the space can meet a constraint on an exactly "
        "counted figure. Reads the configuration of --study-name (stored) or of the options given; "
        "stores nothing. `search` prints the first part when it creates a study.",
    )
    pr.add_argument("--storage", help="study database URL of --study-name (default: as for search)")
    pr.add_argument("--study-name", type=_study_name, help="profile this study's stored configuration")
    pr.add_argument(
        "--sample",
        type=lambda text: 0 if text.strip() == "0" else _whole(text, high=10_000, what="a sample size"),
        default=12,
        help="random plans measured for the share meeting each constraint (default: 12)",
    )
    _config_args(pr)

    d = sub.add_parser(
        "dashboard",
        help="open the study in optuna-dashboard",
        description="Serve optuna-dashboard on the study's storage and artifact store, read-only: a "
        "request to delete, rename or change the study, its trials, notes or artifacts is refused (403) "
        "unless --allow-writes is given. No authentication: bind a loopback address (the default) and "
        "reach it through an SSH tunnel from elsewhere.",
    )
    d.add_argument(
        "--storage",
        help=f"study database URL (default: ${ENV_URL}, else {DEFAULT_URL} in the working directory)",
    )
    d.add_argument("--artifacts", help="artifact store to browse (default: as for search)")
    d.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    d.add_argument("--port", type=_port, default=8080, help="port, 1 to 65535 (default: 8080)")
    d.add_argument(
        "--allow-writes",
        action="store_true",
        help="let the page delete and rename studies, edit notes, tell or skip trials and upload or "
        "delete artifacts (default: refused; anyone who reaches the port could destroy the study)",
    )
    px = sub.add_parser(
        "proxy",
        help="serve the study database to many workers (Optuna's gRPC storage proxy)",
        description="Serve the study database to workers whose --storage is grpc://HOST:PORT: Optuna's gRPC "
        "storage proxy, with tradeoff's study lock and heartbeats beside it, so budgets stay exact and a "
        "lost worker's trial is retried. One proxy holds the database connections of the whole fleet. "
        "No authentication and no TLS: keep the port inside a private network (a cluster's Service).",
    )
    px.add_argument(
        "--storage",
        help=f"study database URL to serve (default: ${ENV_URL}, else {DEFAULT_URL} in the working "
        "directory)",
    )
    px.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 in a container)"
    )
    px.add_argument("--port", type=_port, default=13000, help="port, 1 to 65535 (default: 13000)")
    px.add_argument(
        "--threads",
        type=lambda text: _whole(text, high=100_000, what="a thread count"),
        default=256,
        help="calls served at once; a worker waiting for the study lock holds one, so give more than "
        "the workers (default: 256)",
    )
    px.add_argument(
        "--allow-delete",
        action="store_true",
        help="let clients delete studies through the proxy (default: refused)",
    )
    return parser


def _select_args(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--weights",
        help="cost weights, e.g. accuracy=0.6,size=0.2,latency=0.1,energy=0.1 (the default); names: "
        + ", ".join(by_weight()),
    )
    _constraint_args(s, "only trials with")


def _constraint_args(s, prefix: str, *, relative: bool = False) -> None:
    """One flag per registered figure's constraint (--max-size-mb, --min-accuracy, ...);
    ``relative``: a bound may also be a percentage (50%) or a factor (/10) of the baseline's."""
    for name, figure in by_constraint().items():
        unit = figure.constraint_unit.strip() or ("fraction 0-1" if figure.unit == "fraction" else "count")
        sign = "<=" if figure.direction == "minimize" else ">="
        form = ""
        if relative and figure.unit != "fraction":
            form = ", or relative to the baseline's: 50%% of it, or /10 of it"
        s.add_argument(
            figure.flag,
            dest=name,
            type=_bound if relative else _finite,
            help=f"{prefix} {figure.name} {sign} this ({unit}{form})",
        )


def _bound(text: str) -> float | str:
    """A constraint bound: a finite number, or a form relative to the baseline (checked with the
    configuration: search.study.goals)."""
    from tradeoff.search.study.goals import is_relative

    return text.strip() if is_relative(text) else _finite(text)


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
        type=lambda text: _whole(text, high=1024, what="a thread count"),
        default=None,
        help="torch CPU threads (default: the cores divided among the tradeoff processes running on this "
        "host, re-read before each trial); recorded with each latency",
    )
    s.add_argument(
        "--heartbeat-interval",
        type=lambda text: _whole(text, high=86400, what="a heartbeat interval in seconds"),
        default=60,
        help="seconds between a running trial's heartbeats (default: 60)",
    )
    s.add_argument(
        "--grace-period",
        type=lambda text: _whole(text, high=7 * 86400, what="a grace period in seconds"),
        default=None,
        help="seconds without a heartbeat after which a trial is failed and retried by another worker "
        "(default and least: twice the interval; a trial whose worker beats more slowly gets twice its "
        "own interval)",
    )


def _stop_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--stop-when-met",
        action="store_true",
        help="stop once the study holds a measured plan that meets every constraint (any worker's; "
        "running trials finish, the rest of the budget is not spent); needs a constraint",
    )


def _config_args(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("search configuration (stored with the study)")
    g.add_argument(
        "--data",
        "--task",
        dest="task",
        help="the data: digits (bundled, the default), fashion-mnist (Debian's dataset-fashion-mnist: "
        "apt-get install dataset-fashion-mnist), an image folder (one sub-folder per class, "
        "optionally inside train/ val/ test/), or a plug-in package.module:function returning "
        "(train, val, test)",
    )
    g.add_argument(
        "--data-root",
        metavar="DIR",
        help="fashion-mnist: the folder holding its four IDX files, gzipped or not (default: "
        "/usr/share/datasets/fashion-mnist, where Debian's package puts them)",
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
        choices=NORMALIZATIONS,
        help="image folders: per-channel statistics of the training split (data, the default) or "
        "ImageNet's (for ImageNet-trained checkpoints)",
    )
    g.add_argument(
        "--objectives",
        help="comma-separated figures to optimise (default: accuracy,size_bytes,latency_ms, and energy_mj "
        "where a hardware counter measures it; "
        f"any of {', '.join(FIGURES)})",
    )
    _constraint_args(g, "constraint:", relative=True)
    g.add_argument(
        "--max-accuracy-drop",
        metavar="POINTS",
        type=_finite,
        help="constraint: accuracy at most this many points below the baseline's (resolved once the "
        "baseline is measured; instead of --min-accuracy)",
    )
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
        "--runtime",
        metavar="{" + ",".join(RUNTIMES) + "}",
        help="what runs the model where it is measured, and what export writes: onnxruntime (the default "
        "on cpu; int8 by its quantize_static), openvino (pip install openvino; the same ONNX file) or "
        "torchscript (PyTorch's own kernels; the only one on cuda), or one a --plugin registers; "
        "stored with the study",
    )
    g.add_argument(
        "--finetune-steps", type=int, help="fine-tuning batches after a structural change (default: 150)"
    )
    g.add_argument(
        "--student-steps",
        type=int,
        help="distillation batches for a student trained from scratch (default: 400)",
    )
    for knob in KNOBS.values():
        for option, spec in knob.options.items():
            g.add_argument(
                spec.flag, dest=f"knob_option:{knob.name}:{option}", choices=spec.choices, help=spec.help
            )
    g.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        metavar="MODULE",
        help="a Python module (package.module, the working directory is importable) imported before the "
        "search space is read: knobs and figures of your own register themselves there (repeatable; "
        "stored with the study, so every worker imports it too)",
    )
    g.add_argument(
        "--teacher-epochs", type=_positive_int, help="teacher training epochs (default: per model)"
    )
    g.add_argument("--latency-repeats", type=int, help="timed runs per latency measurement (default: 50)")
    g.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="what proposes the plans (default: auto: a start design, then TPE, one joint density over "
        "the knobs of a global study and one per knob where the allocation sets them layer by layer, "
        "chosen in benchmarks/samplers.py); tpe, nsga2, gp (Gaussian process) or random; stored with "
        "the study",
    )
    g.add_argument(
        "--population-size",
        type=int,
        help="NSGA-II population, with --sampler nsga2 (default: fitted to the first run's --n-trials)",
    )
    g.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        help="how finely a plan is searched: allocated (the default: per technique a budget and an "
        "allocation sharpness, made per-layer values by the study's measured sensitivity table), global "
        "(one value per knob for the whole network) or layer (one searched value per layer group and "
        "technique, for large budgets); stored with the study",
    )
    g.add_argument(
        "--allocate",
        metavar="KNOBS",
        help="per-layer knobs an allocated or layer study also sets layer by layer, beyond the default "
        "ones (prune_ratio, rank_ratio, weight_bits, block_drop): student_width, one width per "
        "resolution stage (its sensitivity rows are a proxy, not yet shown to help); stored with the study",
    )
    g.add_argument(
        "--keep-models",
        choices=KEEP_MODELS,
        help="deployed models and fine-tuned float models kept in the artifact store, so that export "
        "does not train again and plans that differ only in bit-width share one fine-tune: front "
        "(default: the current front's), all, or none; stored with the study",
    )
    g.add_argument(  # its name until 2026-12: "weights" now means the cost weights of `select` only
        "--keep-weights",
        dest="keep_models",
        choices=KEEP_MODELS,
        action=_Renamed,
        new="--keep-models",
        help=argparse.SUPPRESS,
    )
    g.add_argument(
        "--no-reuse",
        dest="reuse",
        action="store_const",
        const=False,
        help="fine-tune every plan from the teacher, even when a plan of the same structure was "
        "fine-tuned already, and queue no other bit-widths of a new structure (default: reuse)",
    )
    g.add_argument(
        "--no-early-stop",
        dest="early_stop",
        action="store_const",
        const=False,
        help="finish every fine-tune, even one that cannot reach the front any more (default: stop it)",
    )
    g.add_argument("--seed", type=int, help="seed of teacher training and fine-tuning (default: 0)")
    g.add_argument(
        "--scalarize",
        metavar="WEIGHTS",
        help="search one objective, the weighted cost of `tradeoff select` (e.g. "
        "accuracy=0.6,size=0.2,latency=0.1,energy=0.1), with TPE",
    )


class _Renamed(argparse.Action):
    """A flag's old name, accepted for one release: it sets the new one and says so."""

    def __init__(self, *args, new: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"tradeoff: note: {option_string} is now {self.new} "
            "(the old name is accepted until the next release)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


_PARSED = {"objectives", "constraints", "space", "knob_options", "plugins", "scalarize", "allocate", "goals"}


def _given_config(args: argparse.Namespace) -> dict[str, Any]:
    """The search settings the user typed; the rest come from the stored study or defaults."""
    import dataclasses

    from tradeoff.search.study.config import SearchConfig

    given: dict[str, Any] = {}
    # every setting whose flag stores the config field's own value; the ones parsed from text
    # (lists, mappings, knob options) follow
    for f in dataclasses.fields(SearchConfig):
        if f.name not in _PARSED and getattr(args, f.name, None) is not None:
            given[f.name] = getattr(args, f.name)
    if args.objectives is not None:
        given["objectives"] = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
        if not given["objectives"]:
            from tradeoff.search.errors import UsageError

            raise UsageError("--objectives must name at least one figure, e.g. accuracy,size_bytes")
    constraints = _constraints(args)
    goals = {n: v for n, v in constraints.items() if isinstance(v, str)}
    if getattr(args, "max_accuracy_drop", None) is not None:
        from tradeoff.search.study.goals import DROP

        goals["min_accuracy"] = f"{DROP}{args.max_accuracy_drop:g}"
    constraints = {n: v for n, v in constraints.items() if not isinstance(v, str)}
    if constraints:
        given["constraints"] = constraints
    if goals:
        given["goals"] = goals
    if args.space:
        given["space"] = dict(args.space)
    options: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("knob_option:") and value is not None:
            _, knob, option = key.split(":")
            options.setdefault(knob, {})[option] = value
    if options:
        given["knob_options"] = options
    if args.plugins:
        given["plugins"] = tuple(args.plugins)
    if args.allocate is not None:
        given["allocate"] = tuple(k.strip() for k in args.allocate.split(",") if k.strip())
    if args.scalarize:
        from tradeoff.search.views.cost import parse_weights

        given["scalarize"] = parse_weights(args.scalarize)
    return given


def _constraints(args: argparse.Namespace) -> dict[str, float]:
    """The constraint flags the user typed."""
    return {n: getattr(args, n) for n in by_constraint() if getattr(args, n, None) is not None}


_transient = {"open": False}  # a progress line is on the terminal, not yet ended


def _log(msg: str) -> None:
    if _transient["open"]:
        sys.stderr.write("\n")
        _transient["open"] = False
    print(msg, file=sys.stderr, flush=True)


def _progress(msg: str) -> None:
    """Progress of a long step: one line that updates in place on a terminal, plain lines in a
    log (stderr not a terminal)."""
    if not sys.stderr.isatty():
        _log(msg)
        return
    sys.stderr.write("\r" + msg + "\x1b[K")
    sys.stderr.flush()
    _transient["open"] = True


_log.progress = _progress  # type: ignore[attr-defined]  # what long steps report through


def _run(args: argparse.Namespace, *, mode: str) -> int:
    from tradeoff.search.commands import run_trials
    from tradeoff.search.views.report import format_front

    study = run_trials(
        mode,
        url=args.storage,
        study_name=args.study_name,
        given={} if mode == "worker" else _given_config(args),
        n_trials=args.n_trials,
        artifacts=args.artifacts,
        device=args.device,
        threads=args.threads,
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        stop_when_met=getattr(args, "stop_when_met", False),
        log=_log,
    )
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
    from tradeoff.search.commands import load_study
    from tradeoff.search.views.report import format_front

    study, _ = load_study(args.storage, args.study_name)
    print(format_front(study))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from tradeoff.search.commands import load_study
    from tradeoff.search.views.cost import format_ranking, ranking

    study, config = load_study(args.storage, args.study_name)
    from tradeoff.search.views.report import constraints_line

    ranked, weights = ranking(study, config, weights=args.weights, constraints=_constraints(args))
    print(format_ranking(ranked, weights, limit=args.limit))
    bounds = constraints_line(study)
    if bounds:
        print(f"the study's {bounds}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tradeoff.search.commands import report

    report(args.storage, args.study_name, args.output, log=_log, artifacts=args.artifacts)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from tradeoff.search.commands import export

    record = export(
        args.storage,
        args.study_name,
        args.output,
        trial=args.trial,
        weights=args.weights,
        constraints=_constraints(args),
        force=args.force,
        artifacts=args.artifacts,
        device=args.device,
        log=_log,
        finetune_steps=args.finetune_steps,
        front=args.front,
    )
    if args.front:
        summary = {k: record[k] for k in ("finetune_steps", "rank_correlation")}
        summary["trials"] = [
            {k: r[k] for k in ("trial", "folder", "test_accuracy", "final_steps")} for r in record["trials"]
        ]
    else:
        summary = {k: record[k] for k in ("trial", "plan", "test_accuracy", "differences")}
        if "final_finetune" in record:
            summary["final_finetune"] = record["final_finetune"]
    print(json.dumps(summary, indent=2))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from tradeoff.search.views.verify import verify

    torch.set_flush_denormal(True)
    problems = verify(args.directory, data=args.data, data_root=args.data_root, log=_log)
    for p in problems:
        print(f"tradeoff: verify: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.directory}: verified")
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from tradeoff.search.commands import sensitivity

    print(sensitivity(args.storage, args.study_name, artifacts=args.artifacts, as_json=args.json, log=_log))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from tradeoff.search.commands import profile_space

    profile_space(args.storage, args.study_name, _given_config(args), sample=args.sample, log=_log)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tradeoff.search.commands import dashboard

    dashboard(
        args.storage,
        artifacts=args.artifacts,
        host=args.host,
        port=args.port,
        allow_writes=args.allow_writes,
        log=_log,
    )
    return 0


def cmd_proxy(args: argparse.Namespace) -> int:
    from tradeoff.search.commands import proxy

    proxy(
        args.storage,
        host=args.host,
        port=args.port,
        threads=args.threads,
        allow_delete=args.allow_delete,
        log=_log,
    )
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
    "sensitivity": cmd_sensitivity,
    "profile": cmd_profile,
    "dashboard": cmd_dashboard,
    "proxy": cmd_proxy,
}


# commands that run models outside a search: on this process's share of the host's cores, as a
# search's trials are (search, create and worker take theirs around the teacher and the trials)
ON_A_SHARE = ("export", "verify", "profile")


@contextlib.contextmanager
def _cores(command: str) -> Iterator[None]:
    """Torch's threads for ``command``: its share of the cores beside the other tradeoff
    processes registered on this host (two processes that each take every core slow each other
    by 10-100x); the default where the command runs no model or the run directory is unusable."""
    if command not in ON_A_SHARE:
        yield
        return
    from tradeoff.search.study.worker import on_a_share

    with contextlib.ExitStack() as stack:
        with contextlib.suppress(TradeoffError, OSError):  # no share: torch's own default
            stack.enter_context(on_a_share())
        yield


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        if os.environ.get("TRADEOFF_LLC", "").strip():  # a bad target cache: said before any trial runs
            from tradeoff.search.trial.measure.energy import target_cache_bytes

            target_cache_bytes()
        with _cores(args.command):
            return COMMANDS[args.command](args)
    except TradeoffError as e:
        print(f"tradeoff: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # a file or folder that cannot be used (a permission, a full disk): one line naming it;
        # a storage fault that reached us through Optuna's own wrappers (a read-only database):
        # one line saying so; neither a traceback
        from tradeoff.storage.urls import path_fault, permanent_fault

        fault = path_fault(e) or permanent_fault(e)
        if fault is None:
            raise
        print(f"tradeoff: error: {fault}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tradeoff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
