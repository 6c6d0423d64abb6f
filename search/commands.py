"""What each ``tradeoff`` command does, with plain arguments (``cli.py`` only parses).

``run_trials`` serves ``search``, ``create`` and ``worker``; the others read a study.
Messages for people go to ``log`` (stderr in the CLI); results are returned or printed to
stdout by the CLI. Errors a user can fix are :class:`~tradeoff.storage.errors.TradeoffError`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from tradeoff.search.errors import UsageError
from tradeoff.storage import ENV_URL, ENV_URL_FILE

Log = Callable[[str], None]


def storage_url(given: str | None) -> str:
    """The storage URL; one typed with a password on the command line is refused (every user of
    the machine can read a command line), and the error does not repeat it."""
    from tradeoff.storage import redact, resolve_url

    if given and redact(given) != given:
        raise UsageError(
            f"--storage {redact(given)} carries a password on the command line; put the URL in "
            f"${ENV_URL} or in a file named by ${ENV_URL_FILE}"
        )
    return resolve_url(given)


def load_study(url: str | None, study_name: str):
    """(study, its stored configuration) of an existing study; UsageError when there is none."""
    import optuna

    from tradeoff.search.study.study import stored_config
    from tradeoff.storage import open_storage

    storage = open_storage(storage_url(url), heartbeat_interval=None)
    config = stored_config(storage, study_name)
    if config is None:
        raise UsageError(f"no study named {study_name!r} in this storage; run `tradeoff search` first")
    return optuna.load_study(study_name=study_name, storage=storage), config


def study_paths(url: str | None, artifacts: str | None) -> dict[str, str]:
    """The local paths a command must never write over: the SQLite file of the study database
    and the artifact store's folder (an S3 store has none)."""
    from sqlalchemy.engine import make_url

    from tradeoff.storage.artifacts import resolve_artifacts

    paths = {}
    with contextlib.suppress(Exception):  # a URL that does not parse is refused where it is opened
        parsed = make_url(storage_url(url))
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            paths["database"] = parsed.database
    store = resolve_artifacts(artifacts)
    if not store.startswith("s3://"):
        paths["artifact store"] = store
    return paths


def _device(device: str | None) -> str:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device


def shape_bounded(config) -> bool:
    """Whether ``config`` bounds a figure the untrained network shows (size, MACs, latency, ...)."""
    from tradeoff.search.trial.figures import by_constraint

    known = by_constraint()
    return any(not known[n].needs_training for n in (*config.constraints, *config.goals))


def check_space(config, task, *, sample: int = 0, log: Log) -> list:
    """Profile the space of ``config`` on ``task`` (search.study.profile) and print it; UsageError
    when a constraint is out of every plan's reach. Returns the profiled plans."""
    from tradeoff.search.study.profile import profile, profile_text, unreachable

    t = time.perf_counter()
    profiled = profile(config, task, sample=sample, log=log)
    log(profile_text(config, profiled) + f"\n  ({time.perf_counter() - t:.1f} s)")
    line = unreachable(config, profiled)
    if line:
        raise UsageError(line)
    return profiled


def profile_space(
    url: str | None, study_name: str | None, given: Mapping[str, Any], *, sample: int, log: Log
):
    """`tradeoff profile`: the profile of a stored study's space (``study_name``) or of the
    configuration ``given``; nothing is stored."""
    from tradeoff.search.study.config import SearchConfig
    from tradeoff.search.task.tasks import task_for

    if study_name is not None:
        if given:
            raise UsageError("--study-name profiles the study's stored configuration: give no search options")
        _, config = load_study(url, study_name)
    else:
        try:
            config = SearchConfig(**given).validated()
        except (TypeError, ValueError) as e:
            raise UsageError(f"bad search configuration: {e}") from None
    return check_space(config, task_for(config, log=log), sample=sample, log=log)


def run_trials(
    mode: str,
    *,
    url: str | None,
    study_name: str,
    given: Mapping[str, Any],
    n_trials: int | None,
    artifacts: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    heartbeat_interval: int = 60,
    grace_period: int | None = None,
    stop_when_met: bool = False,
    log: Log,
) -> Any:
    """``search``: create or resume the study and run ``n_trials`` more. ``create``: make the
    study, its teacher and its baseline, with a budget of ``n_trials``. ``worker``: join a
    study made by ``create`` and run trials until its budget is met (or ``n_trials`` ran).
    ``stop_when_met``: stop once the study holds a measured plan meeting every constraint.
    Returns the study."""
    import optuna
    import torch

    from tradeoff.search.study.study import open_study, sampler_line
    from tradeoff.search.study.worker import (
        NothingMeetsBounds,
        Stopper,
        budgeted,
        counts,
        on_a_share,
        run_budget,
        run_dir,
        run_worker,
        worker_id,
    )
    from tradeoff.search.task.tasks import task_for
    from tradeoff.search.task.teacher import cache_dir, ensure_teacher
    from tradeoff.search.trial.kept import KeptModels
    from tradeoff.search.trial.runner import Runner
    from tradeoff.search.views.notes import save_sensitivity, write_notes
    from tradeoff.search.views.report import progress_line
    from tradeoff.spaces import structure_key
    from tradeoff.storage import open_artifact_store, open_storage, redact

    torch.set_flush_denormal(True)
    if grace_period is not None and grace_period < 2 * heartbeat_interval:
        raise UsageError(
            f"--grace-period {grace_period} is shorter than twice --heartbeat-interval {heartbeat_interval}: "
            f"a live trial would be failed between two heartbeats; give at least {2 * heartbeat_interval}"
        )
    device = _device(device)
    url = storage_url(url)
    cache_dir()  # a teacher cache or run directory that cannot be written is said before any study is stored
    run_dir()
    storage = open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    tasks = []

    def can_stop(cfg) -> None:
        if stop_when_met and not cfg.constraints:
            from tradeoff.search.trial.figures import by_constraint

            flags = ", ".join(f.flag for f in list(by_constraint().values())[:3])
            raise UsageError(
                f"--stop-when-met stops at the first plan meeting every constraint, but study "
                f"{study_name!r} has none: give one ({flags}, ...) when the study is made"
            )

    def prepare(cfg) -> None:  # data and model checked before a new study is stored
        can_stop(cfg)
        tasks.append(task_for(cfg, log=log))
        if shape_bounded(cfg):  # a bound no plan can meet is said before the study is stored
            check_space(cfg, tasks[-1], log=log)

    study, config, created = open_study(
        storage,
        study_name,
        dict(given),
        n_trials=n_trials,
        create=(mode != "worker"),
        prepare=prepare,
        who=worker_id() if mode == "worker" else "",
    )
    can_stop(config)
    if config.target.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"the study measures on {config.target}, but no CUDA device is available here")
    budget, to_run = run_budget(study, mode, n_trials, created=created)
    complete, _ = counts(study)
    share = f"budget {budget}" if budget is not None else f"this run: {to_run} more"
    log(
        f"{'created' if created else 'joined' if mode == 'worker' else 'resuming'} study "
        f"{study_name!r} in {redact(url)} ({complete} measured plans, {share})"
    )
    log(sampler_line(config))
    task = tasks[0] if tasks else task_for(config, log=log)
    store = open_artifact_store(artifacts)
    # the teacher, the sensitivity pass and every trial run on this process's share of the host's
    # cores (another worker or test beside it would otherwise oversubscribe them)
    with on_a_share(threads) as share:
        teacher = ensure_teacher(study, task, store, device=device, train=(mode != "worker"), log=log)
        kept_models = KeptModels(store, keep=config.keep_models)
        table = None
        if config.granularity != "global":
            from tradeoff.search.study.sensitivity import ensure_sensitivity

            table = ensure_sensitivity(study, storage, config, task, teacher, store, log=log)
            save_sensitivity(study, table)
        runner = Runner(config, task, teacher, device=device, kept=kept_models, table=table)

        def tidy() -> dict[str, int]:
            return kept_models.tidy(
                study, config.objectives, lambda params: structure_key(runner.plan_of(params))
            )

        start, done = time.perf_counter(), 0
        total = to_run or max(0, (budget or 0) - complete)

        def progress(trial: optuna.trial.FrozenTrial) -> None:
            nonlocal done
            # a repeated plan, a pruned one and a queued bit-width variant are not counted
            done += budgeted(trial)
            log(progress_line(study, trial, done=done, total=total, elapsed_s=time.perf_counter() - start))
            write_notes(study, trial, log=log)
            with contextlib.suppress(Exception):  # tidying is best effort: the next trial tidies again
                tidy()

        with Stopper() as stopper:

            def set_threads() -> None:
                torch.set_num_threads(threads or share())

            try:
                run_worker(
                    study,
                    storage,
                    runner,
                    propose=runner.propose,
                    budget=budget,
                    n_trials=to_run,
                    stopper=stopper,
                    on_trial=progress,
                    before_trial=set_threads,
                    on_wait=log,
                    constraints=dict(config.constraints),
                    stop_when_met=stop_when_met,
                )
            except NothingMeetsBounds as e:
                with contextlib.suppress(Exception):
                    tidy()
                raise UsageError(str(e)) from None
    if stopper.requested:
        log("stopped: no trial of this worker is left running")
    kept = tidy()
    log(
        f"models kept ({config.keep_models}): {kept['trials']} deployed models, "
        f"{kept['trial_bytes'] / 1e6:.1f} MB; {kept['floats']} fine-tuned float models, "
        f"{kept['float_bytes'] / 1e6:.1f} MB"
    )
    log(queued_line(study, mode, budget=budget, stopped=stopper.requested))
    return study


ROLE_WORDS = {
    "baseline": "the baseline",
    "single-technique": "single-technique plans of the start design",
    "space-filling": "space-filling plans of the start design",
    "sibling": "bit-width variants of trained structures",
}


def queued_line(study, mode: str, *, budget: int | None, stopped: bool) -> str:
    """The last line of a run: what is left queued in the study, and why it was not run."""
    from tradeoff.search.study.worker import counts, left_queued

    queued = left_queued(study)
    if not queued:
        return "nothing left queued"
    what = ", ".join(f"{n} {ROLE_WORDS.get(role, role + ' plans')}" for role, n in sorted(queued.items()))
    if stopped:
        why = "this run was stopped; the next run on the study takes them first"
    elif mode == "create":
        why = "`tradeoff worker` processes on the study run them"
    elif mode == "search":
        why = "this run's --n-trials was met; `tradeoff search` on the study again takes them first"
    else:
        complete, _ = counts(study)
        why = (
            f"the study's budget of {budget} measured plans is met"
            if budget is not None and complete >= budget
            else "this worker's --n-trials was met; another worker takes them"
        )
    return f"left queued: {what} ({why})"


def report(
    url: str | None, study_name: str, output: str, *, log: Log, artifacts: str | None = None
) -> tuple[str, str]:
    from tradeoff.search.study.records import SENSITIVITY_ATTR
    from tradeoff.search.views.plots import write_report

    if not output or not output.strip():
        raise UsageError("--output is empty; name the HTML file to write, e.g. report.html")
    if os.path.isdir(output):
        example = os.path.join(output, "report.html")
        raise UsageError(f"--output {output} is a directory; name the HTML file to write, e.g. {example}")
    study, _ = load_study(url, study_name)
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError(f"--output {output}: the directory {parent} does not exist")
    table = None
    if SENSITIVITY_ATTR in study.user_attrs:
        from tradeoff.search.study.sensitivity import load_sensitivity
        from tradeoff.storage import open_artifact_store

        try:
            table = load_sensitivity(study, open_artifact_store(artifacts))
        except UsageError as e:  # the front is still worth a report
            log(f"the report leaves out the sensitivity table: {e}")
    html, png = write_report(study, output, table=table)
    log(f"wrote {html} ({os.path.getsize(html) / 1e6:.1f} MB, self-contained) and {png}")
    return html, png


def export(
    url: str | None,
    study_name: str,
    output: str,
    *,
    trial: int | None,
    weights: str | None,
    constraints: Mapping[str, float],
    force: bool,
    artifacts: str | None,
    device: str,
    log: Log,
    finetune_steps: int = 0,
    front: bool = False,
) -> dict[str, Any]:
    """Choose a trial (``trial``, or the top of ``select`` under ``weights`` and
    ``constraints``), rebuild, re-measure, test and write it; returns the export record.
    ``finetune_steps``: train the plan that much longer first (the final fine-tune).
    ``front``: every trial of the front instead, each in ``output/trial-N``, with
    ``output/front.json`` (both accuracies of each, and how well the search-time accuracy
    ranks the final one); returns that summary."""
    import torch

    from tradeoff.search.task.tasks import task_for
    from tradeoff.search.task.teacher import ensure_teacher
    from tradeoff.search.trial.runner import Runner
    from tradeoff.search.views.cost import choose
    from tradeoff.search.views.export import check_target, export_trial
    from tradeoff.storage import open_artifact_store

    if not 0 <= finetune_steps <= 10**7:
        raise UsageError(f"--finetune-steps {finetune_steps}: give 0 to 10000000 batches")
    if front and trial is not None:
        raise UsageError("--front exports every trial of the front; drop --trial, or drop --front")
    torch.set_flush_denormal(True)
    protected = study_paths(url, artifacts)
    check_target(output, force, protected=protected, front=front)  # before any work
    study, config = load_study(url, study_name)
    if front:
        from tradeoff.search.views.report import front as front_of

        chosen_trials = front_of(study)
        if not chosen_trials:
            raise UsageError(
                f"study {study_name!r} has no front yet (no feasible measured trial); search first"
            )
        log(
            f"exporting the {len(chosen_trials)} trials of the front: "
            + ", ".join(f"#{t.number}" for t in chosen_trials)
        )
    else:
        chosen_trials = [
            choose(study, config, trial=trial, weights=weights, constraints=constraints, log=log)
        ]
    from tradeoff.search.trial.kept import KeptModels

    task = task_for(config, log=log)
    store = open_artifact_store(artifacts)
    teacher = ensure_teacher(study, task, store, train=False, log=log)
    from tradeoff.search.study.sensitivity import load_sensitivity

    runner = Runner(
        config,
        task,
        teacher,
        device=device,
        kept=KeptModels(store, keep=config.keep_models),
        table=load_sensitivity(study, store),
    )
    if not front:
        record = export_trial(
            study,
            chosen_trials[0],
            output,
            runner=runner,
            force=force,
            protected=protected,
            finetune_steps=finetune_steps,
            log=log,
        )
        _said_written(output, record, log)
        return record
    from tradeoff.search.views.export import FRONT_FILE, write_front

    def one(t, folder: str) -> dict[str, Any]:
        record = export_trial(
            study, t, folder, runner=runner, protected=protected, finetune_steps=finetune_steps, log=log
        )
        _said_written(folder, record, log)
        return record

    summary = write_front(output, chosen_trials, one, finetune_steps=finetune_steps)
    rho = summary.get("rank_correlation", {})
    if rho.get("spearman") is not None:
        log(
            f"search-time validation accuracy against final test accuracy over {rho['plans']} fine-tuned "
            f"plans: Spearman {rho['spearman']:.2f}, Kendall {rho['kendall']:.2f}"
        )
    log(f"wrote {output}: {len(chosen_trials)} exports and {FRONT_FILE}")
    return summary


def _said_written(output: str, record: dict[str, Any], log: Log) -> None:
    onnx = record["onnx"]
    log(
        f"wrote {output}: {', '.join(record['files'])}, plan.json, record.json"
        + ("" if onnx.get("written") else f" (no ONNX: {onnx['reason']})")
    )


def sensitivity(url: str | None, study_name: str, *, artifacts: str | None, as_json: bool, log: Log) -> str:
    """The study's sensitivity table as text (or its JSON); UsageError when it has none."""
    from tradeoff.search.study.sensitivity import load_sensitivity, table_text
    from tradeoff.storage import open_artifact_store

    study, config = load_study(url, study_name)
    table = load_sensitivity(study, open_artifact_store(artifacts))
    if table is None and config.granularity != "global":
        raise UsageError(
            f"study {study_name!r} (granularity {config.granularity}) has no sensitivity table yet: the "
            "first `tradeoff search` or `tradeoff create` on it measures it before its first trial"
        )
    if table is None:
        raise UsageError(
            f"study {study_name!r} has no sensitivity table (granularity global: one value per knob); a "
            "study made with --granularity allocated or layer measures one"
        )
    return table.to_json() if as_json else table_text(table)


def free_port(host: str, port: int) -> None:
    """UsageError naming ``host:port`` when a server could not listen there (taken, or not an
    address of this machine): said before the server starts."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}; choose another --port") from None


def dashboard(
    url: str | None, *, artifacts: str | None, host: str, port: int, allow_writes: bool = False, log: Log
) -> None:
    from tradeoff.search.views.dashboard import exposure_warning, serve
    from tradeoff.storage import open_artifact_store, open_storage, redact

    url = storage_url(url)
    storage = open_storage(url, heartbeat_interval=None)
    store = open_artifact_store(artifacts)
    free_port(host, port)
    warning = exposure_warning(host, allow_writes=allow_writes)
    if warning:
        log(warning)
    mode = "read-write (--allow-writes)" if allow_writes else "read-only"
    log(f"optuna-dashboard on http://{host}:{port}/dashboard/ for {redact(url)}, {mode} (Ctrl-C stops it)")
    serve(storage, host=host, port=port, artifact_store=store, allow_writes=allow_writes)


def proxy(
    url: str | None, *, host: str, port: int, threads: int = 256, allow_delete: bool = False, log: Log
) -> None:
    """Serve the study database behind ``url`` as a gRPC proxy until interrupted."""
    from tradeoff.search.views.dashboard import loopback
    from tradeoff.storage import redact
    from tradeoff.storage.proxy import make_server

    url = storage_url(url)
    free_port(host, port)
    server = make_server(url, host, port, threads=threads, allow_delete=allow_delete)
    if not loopback(host):
        log(
            f"warning: --host {host} serves the study database without authentication or TLS to every "
            "machine that reaches this one: anyone there can read and change its trials; keep the port "
            "inside a private network"
        )
    server.start()
    log(
        f"study proxy on grpc://{host}:{port} for {redact(url)}; workers use --storage grpc://HOST:{port} "
        "(Ctrl-C stops it)"
    )
    try:
        server.wait_for_termination()
    finally:
        server.stop(grace=2)
