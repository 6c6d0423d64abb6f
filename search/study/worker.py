"""The worker loop: join a study and run its trials until its budget is met or it is stopped.

    while not stopped:
        fail trials whose worker vanished           # heartbeat; a retry is enqueued (idempotent)
        with storage.lock(study):                  # one worker at a time decides
            measured >= budget            -> done
            measured + running >= budget  -> wait (a running trial may still fail)
            else                          -> ask a trial (a waiting retry first)
        run it with a heartbeat, tell the result
        a plan already measured (answered from the study) is not counted; too many in a row -> done

The budget counts measured plans that the sampler chose: a plan the sampler proposes again is
answered from the study at no cost, a plan pruned before or during its fine-tune (a broken
constraint, a fine-tune that cannot reach the front) was not measured, and the other bit-widths
of a newly fine-tuned structure (queued by the runner, role ``sibling``) cost a quantization
each: none of them uses up ``--n-trials`` or the study's budget. Queued variants still waiting
when the budget is met are measured before the worker stops.

The study lock, which the storage owns (``tradeoff.storage.lock``: a PostgreSQL advisory lock
or MySQL's GET_LOCK for a shared database, a file lock for SQLite; through ``tradeoff proxy``
the same lock, held by the proxy for the worker), is what makes "exactly N complete trials"
hold with many workers. It covers the count, the reservation of a trial (``ask`` creates the
RUNNING row, or takes a queued one) and, where the caller gives ``propose``, the sampler's
proposal: Optuna samples lazily, at a trial's first ``suggest_*``, so without it two workers
could draw at the same moment, neither seeing the other's plan. Under the lock each proposal
sees every running trial's plan (TPE's constant liar counts them as poor results), and a plan
proposed while a running trial measures it waits for that trial and is answered from it (one
measurement, not two). Not the stale-trial check, which is safe unlocked. Held 30-60 ms per
trial with 1-4 workers and no proposal, so one study lock admits tens of trials a second
(benchmarks/scale.py, BENCHMARKS.md "Scale"); a TPE proposal adds its own time (tens of ms).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from tradeoff.search.study.records import (
    BUDGET_ATTR,
    DUPLICATE_ATTR,
    FAIL_ATTR,
    HEARTBEAT_ATTR,
    ROLE_ATTR,
    SIBLING_ROLE,
    STOPPED_ATTR,
    WORKER_ATTR,
    feasible,
)

DEFAULT_BUDGET = 40  # measured plans, the README's default run
MAX_REPEATS = 25  # plans already measured, proposed in a row, before a worker gives up
MAX_PRUNED = 40  # plans pruned in a row (constraints broken before training) before a worker gives up


def pruned_limits(n: int | None) -> tuple[int, int]:
    """(plans pruned before training in a row, and in all, that a run of ``n`` plans may spend
    before it gives up): pruned plans cost a build each and are not counted, so without a bound
    relative to the run a bound no plan meets would never end a search."""
    n = max(1, n or DEFAULT_BUDGET)
    return min(MAX_PRUNED, max(10, 3 * n)), max(20, 10 * n)


class NothingMeetsBounds(Exception):
    """Every plan a run proposed broke a hard constraint before training; the message names the
    bound and the nearest value measured."""


def bounds_line(trials: list[optuna.trial.FrozenTrial], constraints: dict[str, float]) -> str:
    """``--max-size-mb 1e-06 (the smallest size measured: 0.324 MB)``: for each constraint the
    ``trials`` broke, its flag and bound and the value nearest to it among them."""
    from tradeoff.search.study.records import constraints_of
    from tradeoff.search.trial.figures import by_constraint

    known, parts = by_constraint(), []
    for name, bound in sorted(constraints.items()):
        figure = known.get(name)
        values = [
            float(t.user_attrs[figure.name])
            for t in trials
            if figure is not None and figure.name in t.user_attrs and constraints_of(t).get(name, 0) > 0
        ]
        if not values:
            continue
        best = min(values) if figure.direction == "minimize" else max(values)
        word = "smallest" if figure.direction == "minimize" else "largest"
        parts.append(f"{figure.flag} {bound:g} (the {word} {figure.short} measured: {figure.text(best)})")
    return "; ".join(parts) or "the study's constraints"


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.RDBStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the body runs (Optuna does this inside
    ``study.optimize``; the worker asks and tells trials itself, so it keeps the beat here)."""
    interval = storage.get_heartbeat_interval()
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # a database blip: the next beat retries
                storage.record_heartbeat(trial_id)

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Stopper:
    """SIGINT/SIGTERM: the first asks the worker to stop after the current trial; the second
    interrupts the trial, which is then told FAILED, so no trial is left RUNNING."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> Stopper:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def budgeted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts against the budget: a plan the sampler chose, not a repeat, not a
    queued post-training variant, not pruned before it was measured."""
    return (
        trial.state != TrialState.PRUNED
        and DUPLICATE_ATTR not in trial.user_attrs
        and trial.user_attrs.get(ROLE_ATTR) != SIBLING_ROLE
    )


def counts(study: optuna.Study) -> tuple[int, int]:
    """(measured plans the budget counts: complete trials that are not a repeat of another nor a
    queued variant, running trials that will count)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(t.state == TrialState.COMPLETE and budgeted(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING and budgeted(t) for t in trials)
    return complete, running


def take_waiting(study: optuna.Study, role: str) -> optuna.Trial | None:
    """The first queued trial of ``role``, wherever it stands in the queue, as ``ask`` would take
    it (set running, the sampler told); None when there is none."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if t.user_attrs.get(ROLE_ATTR) != role:
            continue
        try:
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker took it first
    return None


def running_twin(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial | None:
    """Another running trial with ``trial``'s numbers (both proposed under the study lock, so
    each holds its whole plan), or None."""
    params = trial.params
    if not params:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number != trial.number and t.params == params:
            return t
    return None


def wait_for(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    twin: FrozenTrial,
    stopper: Stopper,
    poll_s: float,
) -> None:
    """Until ``twin`` is finished (measured, pruned or failed: a twin whose worker vanished is
    failed here too, and this trial then measures the plan) or the worker is asked to stop."""
    while not stopper.requested and storage.get_trial(twin._trial_id).state == TrialState.RUNNING:
        time.sleep(poll_s)
        fail_lost_trials(study, storage)
    if stopper.requested:
        raise KeyboardInterrupt


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, but a queued baseline goes first: the retry of a baseline whose worker was
    lost is queued behind the seeded plans, and until the baseline is measured `select` and
    `export` refuse and no latency is scaled by it."""
    return take_waiting(study, "baseline") or study.ask()


def left_queued(study: optuna.Study) -> dict[str, int]:
    """{role: queued trials of it} still waiting in ``study``."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        role = str(t.user_attrs.get(ROLE_ATTR, "proposed"))
        out[role] = out.get(role, 0) + 1
    return out


def _proposed(
    trial: optuna.Trial, propose: Callable[[optuna.Trial], None], study: optuna.Study
) -> FrozenTrial | None:
    """``propose(trial)``, under the lock; the running trial with the same plan, if any. A plan
    that cannot be proposed is left to the objective, which fails the trial with its reason."""
    try:
        propose(trial)
    except Exception:  # noqa: BLE001 - the objective proposes again and records why it failed
        return None
    return running_twin(study, trial)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    objective: Callable[[optuna.Trial], list[float]],
    *,
    propose: Callable[[optuna.Trial], None] | None = None,
    budget: int | None,
    n_trials: int | None = None,
    stopper: Stopper | None = None,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    before_trial: Callable[[], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    poll_s: float = 2.0,
    max_repeats: int = MAX_REPEATS,
    constraints: dict[str, float] | None = None,
    stop_when_met: bool = False,
) -> int:
    """Run trials of ``study`` until it has ``budget`` measured plans (None: no study budget),
    this worker has measured ``n_trials``, ``stopper`` asks it to stop, or the sampler proposed
    ``max_repeats`` already measured plans in a row. ``storage`` is the study's storage (it holds
    the study lock). ``on_wait`` hears, once per wait, why the worker waits, and why it gave up.
    Plans pruned before training (a hard bound broken: ``constraints``) are bounded relative to
    the run (:func:`pruned_limits`); when the run measured no plan but the baseline when it
    gives up, :class:`NothingMeetsBounds` says which bound and the nearest value measured.
    ``stop_when_met``: stop, asking for no new plan, once the study holds a complete trial that
    meets every constraint (any worker's; queued bit-width variants are not measured either).
    ``propose`` draws a trial's numbers (the objective's ``suggest_*`` calls) under the study
    lock; a plan a running trial is measuring then waits for it (module docstring).
    Returns the number of trials it ran, repeats, pruned plans and queued variants not counted."""
    ran, waiting, repeats, pruned, feasible_plans = 0, False, 0, 0, 0
    met: optuna.trial.FrozenTrial | None = None
    pruned_all = 0  # plans pruned before training in this run
    broken: list[optuna.trial.FrozenTrial] = []  # pruned before training, or measured infeasible
    in_a_row, in_all = pruned_limits(n_trials if n_trials is not None else budget)
    stopper = stopper or Stopper()
    while not stopper.requested:
        # before the lock: failing a lost trial is safe in any number of workers at once (the
        # state changes once, only the worker that changed it queues the retry), and it reads
        # every running trial and their heartbeats, which the lock need not wait for
        fail_lost_trials(study, storage)
        with storage.lock(study.study_name), warnings.catch_warnings():
            # Optuna warns that heartbeats belong to Study.optimize: this loop keeps its own.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            met = met_by(study) if stop_when_met else None
            if met is not None:
                break
            mine_done = n_trials is not None and ran >= n_trials  # this process's own number of trials
            complete, running = counts(study) if budget is not None else (0, 0)
            if mine_done or (budget is not None and complete >= budget):
                # done: the queued variants of trained structures are measured before it stops
                trial = take_waiting(study, SIBLING_ROLE)
                if trial is None:
                    break
            elif budget is not None and complete + running >= budget:
                # the budget is taken by running trials, one of which may yet fail: a variant
                # meanwhile, else wait
                trial = take_waiting(study, SIBLING_ROLE)
            else:
                trial = ask(study)
            twin = None
            if trial is not None:
                trial.set_user_attr(WORKER_ATTR, worker_id())  # under the lock: never unowned
                if storage.get_heartbeat_interval():
                    trial.set_user_attr(HEARTBEAT_ATTR, int(storage.get_heartbeat_interval()))
                if propose is not None:
                    twin = _proposed(trial, propose, study)
        if trial is None:
            if on_wait is not None and not waiting:
                on_wait(_why_waiting(study, storage))
            waiting = True
            time.sleep(poll_s)  # a running trial may yet fail and leave room
            continue
        waiting = False
        if before_trial is not None:
            before_trial()
        state, values = TrialState.FAIL, None
        try:
            with heartbeat(storage, trial._trial_id):
                if twin is not None:  # measured once: this trial is answered from it
                    wait_for(study, storage, twin, stopper, poll_s)
                values = objective(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:  # the runner recorded where and why
            state = TrialState.PRUNED
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_ATTR, "the worker was stopped during the trial")
            stopper.requested = True
        except Exception:  # noqa: BLE001 - the runner recorded the reason; the study goes on
            pass
        with warnings.catch_warnings():  # a trial another worker failed meanwhile: said below
            warnings.simplefilter("ignore")
            frozen = study.tell(
                trial, values if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True
            )
        if frozen.state != state and on_wait is not None:
            on_wait(
                f"trial #{frozen.number} was failed by another worker while this one ran it "
                f"({frozen.user_attrs.get(FAIL_ATTR, 'no reason recorded')}); its result is not kept"
            )
        if state == TrialState.FAIL and stopper.requested and frozen.user_attrs.get(ROLE_ATTR) in SEEDED:
            requeue(study, frozen)  # a seeded plan interrupted by the user is tried again, once
        repeated = state in (TrialState.COMPLETE, TrialState.PRUNED) and DUPLICATE_ATTR in frozen.user_attrs
        # broke a constraint before training (or repeats such a plan): the space may hold nothing else
        untrained = (
            state == TrialState.PRUNED
            and (frozen.user_attrs.get(STOPPED_ATTR) or {}).get("when") == "before fine-tuning"
        )
        pruned = pruned + 1 if untrained else 0
        pruned_all += untrained
        ok = state == TrialState.COMPLETE and feasible(frozen)
        feasible_plans += ok and frozen.user_attrs.get(ROLE_ATTR) != "baseline"
        if untrained or (state == TrialState.COMPLETE and not ok):
            broken.append(frozen)
        repeats = repeats + 1 if repeated and not untrained else 0
        ran += budgeted(frozen)
        if on_trial is not None:
            on_trial(frozen)
        if pruned >= in_a_row or pruned_all >= in_all:
            count = f"{pruned} plans in a row" if pruned >= in_a_row else f"{pruned_all} plans"
            line = (
                f"{count} broke {bounds_line(broken, constraints or {})} before fine-tuning; loosen "
                "the bound or narrow --space to plans that can meet it"
            )
            if not feasible_plans:
                raise NothingMeetsBounds(f"no plan meets the bounds: {line}")
            if on_wait is not None:
                on_wait(f"stopped: {line}")
            break
        if repeats >= max_repeats:
            if on_wait is not None:
                on_wait(
                    f"stopped: the sampler proposed {repeats} plans in a row that were already measured "
                    "(the space is exhausted or the search has converged); widen --space to search on"
                )
            break
    if met is not None and on_wait is not None:
        from tradeoff.search.study.records import plan_words

        what = (
            "the baseline (no compression)"
            if met.user_attrs.get(ROLE_ATTR) == "baseline"
            else plan_words(met)
        )
        on_wait(
            f"stopped: trial #{met.number} ({what}) meets every constraint of the study "
            "(--stop-when-met); the rest of the budget is not spent"
        )
    return ran


def met_by(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The first complete trial of ``study`` that meets every one of its constraints."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if feasible(t):
            return t
    return None


SEEDED = ("baseline", "single-technique", "space-filling")  # roles of the plans a study seeds
RETRY_ATTR = "retry_of"


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Queue ``trial``'s plan again, once (a retry is not retried): for a trial that failed
    because its worker was lost or stopped, not for its own error. The retry keeps the plan's
    role and says which trial it retries; Optuna's retry bookkeeping (``failed_trial``) is kept,
    so ``RetryFailedTrialCallback.retried_trial_number`` reads it. Returns whether it queued."""
    if trial.system_attrs.get("retry_history") or RETRY_ATTR in trial.user_attrs or not trial.params:
        return False
    attrs = {k: v for k, v in trial.user_attrs.items() if k == ROLE_ATTR}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={**attrs, RETRY_ATTR: trial.number},
            system_attrs={"failed_trial": trial.number, "retry_history": [trial.number]},
        )
    )
    return True


def fail_lost_trials(study: optuna.Study, storage) -> list[int]:
    """Fail the running trials whose worker is gone, each with its ``fail_reason``, and queue
    each plan again once: at once for a worker on this host whose process has ended (its id is
    on the trial), after the grace period without a heartbeat for any other. Returns the
    numbers of the trials it failed."""
    host, me = socket.gethostname(), os.getpid()
    # one read of every running trial's heartbeat age, by the database's clock
    ages = storage.heartbeat_ages(study._study_id) if storage.get_heartbeat_interval() else {}
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = str(t.user_attrs.get(WORKER_ATTR, ""))
        on_host, _, pid = who.rpartition(":")
        if on_host == host and pid.isdigit() and int(pid) != me and not _alive(int(pid)):
            reason = f"its worker {who} ended without finishing it"
        elif (silent := _silent_for(storage, t, ages.get(t._trial_id))) is not None:
            reason = f"no heartbeat from its worker {who or '(unknown)'} for {silent} s"
        else:
            continue
        storage.set_trial_user_attr(t._trial_id, FAIL_ATTR, reason)
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        failed.append(t.number)
        requeue(study, storage.get_trial(t._trial_id))
    return failed


def _silent_for(storage, trial: optuna.trial.FrozenTrial, age: float | None) -> int | None:
    """The grace period ``trial`` broke, its heartbeat being ``age`` seconds old (None: it has
    none), else None: this worker's grace period, but never less than twice the interval the
    trial's own worker beats at (a worker started with a short grace must not fail another's
    live trial)."""
    grace = _grace_s(storage) or 0
    if age is None or age <= grace:
        return None
    theirs = trial.user_attrs.get(HEARTBEAT_ATTR)
    if not isinstance(theirs, (int, float)) or grace >= 2 * theirs:
        return grace
    return int(2 * theirs) if age > 2 * theirs else None


def _why_waiting(study: optuna.Study, storage) -> str:
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    who = ", ".join(f"#{t.number} on {t.user_attrs.get(WORKER_ATTR, '?')}" for t in running[:4])
    grace = _grace_s(storage)
    return (
        f"waiting: the budget is taken by running trials ({who}); a trial whose worker vanished is "
        f"failed and retried after {grace} s without a heartbeat"
        if grace
        else f"waiting: the budget is taken by running trials ({who})"
    )


def _grace_s(storage) -> int | None:
    """Seconds without a heartbeat after which a running trial counts as lost (Optuna's
    default: twice the interval); None without heartbeats."""
    interval = storage.get_heartbeat_interval()
    return (storage.grace_period or 2 * interval) if interval else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_dir() -> str:
    """The folder where this host's workers register (``$TRADEOFF_RUN_DIR``, else the temporary
    directory's ``tradeoff-workers``), made if needed; StorageError naming it when it cannot be."""
    import tempfile

    from tradeoff.storage.artifacts import writable_folder

    folder = os.environ.get("TRADEOFF_RUN_DIR") or os.path.join(tempfile.gettempdir(), "tradeoff-workers")
    return writable_folder(folder, what="the run directory", variable="TRADEOFF_RUN_DIR")


def available_cores(cgroup: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The cores this process may use: those it is pinned to (``taskset``, a cpuset), no more
    than its container's CPU limit (cgroup v2's ``cpu.max``, e.g. a Kubernetes pod's
    ``limits.cpu``, rounded up). ``os.cpu_count()`` is the host's count inside a container: a
    pod limited to 2 cores of a 64-core node would run 64 threads and be throttled."""
    import math

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with contextlib.suppress(OSError, ValueError):
        with open(cgroup) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return max(1, cores)


@contextlib.contextmanager
def host_share() -> Iterator[Callable[[], int]]:
    """Register this worker on this host; yields a function giving its share of the cores
    (:func:`available_cores` // live workers registered here, at least 1), to be asked before
    each trial."""
    folder = run_dir()
    mine = os.path.join(folder, str(os.getpid()))
    # registered already (a caller in this process holds a share: a test process, a library user
    # running a search in process): that registration stays when this one ends
    owned = not os.path.exists(mine)
    open(mine, "a").close()

    def share() -> int:
        alive = 0
        for name in os.listdir(folder):
            if not name.isdigit():
                continue
            if _alive(int(name)):
                alive += 1
            else:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
        return max(1, available_cores() // max(1, alive))

    try:
        yield share
    finally:
        if owned:
            with contextlib.suppress(OSError):
                os.remove(mine)


@contextlib.contextmanager
def torch_threads() -> Iterator[None]:
    """Torch's thread count as it was, restored on the way out: a search or an export run in
    process (a test, a notebook) leaves its caller's threads as it found them."""
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def on_a_share(threads: int | None = None) -> Iterator[Callable[[], int]]:
    """Run torch on ``threads``, or on this process's share of the host's cores, registered with
    :func:`host_share` (yielded, to be asked again before each trial), and restore torch's thread
    count on the way out."""
    import torch

    with host_share() as share, torch_threads():
        torch.set_num_threads(threads or share())
        yield share


def create_finished(study: optuna.Study) -> bool:
    """Whether ``tradeoff create`` finished on ``study``: its teacher stored and its baseline
    measured (a create killed before either is resumed by running it again)."""
    from tradeoff.search.study.records import TEACHER_ATTR

    if TEACHER_ATTR not in study.user_attrs:
        return False
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return any(t.user_attrs.get(ROLE_ATTR) == "baseline" for t in done)


def run_budget(
    study: optuna.Study, mode: str, n_trials: int | None, *, created: bool
) -> tuple[int | None, int | None]:
    """(complete trials the study stops at, None for no study budget; trials this process runs
    at most) for ``mode``: ``search`` runs its own ``n_trials``, however many other searches
    run on the study at the same time; ``create`` stores the study's budget (``n_trials``) and
    runs the baseline alone; ``worker`` runs to the stored budget."""
    from tradeoff.search.errors import UsageError

    if mode == "search":
        return None, n_trials
    if mode == "create":
        if not created and create_finished(study):
            raise UsageError(
                f"study {study.study_name!r} already exists; start workers on it, or choose another "
                "--study-name"
            )
        # a new study, or one whose create was interrupted (before its teacher or its baseline
        # was stored): this create finishes it
        if created or n_trials is not None or BUDGET_ATTR not in study.user_attrs:
            study.set_user_attr(BUDGET_ATTR, int(n_trials or DEFAULT_BUDGET))
        return 1, 1  # the baseline
    budget = study.user_attrs.get(BUDGET_ATTR)
    if budget is None:
        raise UsageError(
            f"study {study.study_name!r} has no trial budget; it was not made by `tradeoff create`"
        )
    return int(budget), n_trials
