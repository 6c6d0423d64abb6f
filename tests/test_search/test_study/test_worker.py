"""The worker loop's budget of measured plans, its repeat limit, and two workers on one study.

Objectives here are synthetic (a trial costs microseconds), so the loop and the samplers are
tested on their own; the runner's part (answering a repeated plan from the study) is tested in
test_runner.py, and real workers in tests/test_workers.py.
"""

from __future__ import annotations

import threading
import time

import optuna

from tradeoff.search.study.config import SearchConfig
from tradeoff.search.study.records import DUPLICATE_ATTR
from tradeoff.search.study.study import open_study, study_sampler
from tradeoff.search.study.worker import counts, run_worker
from tradeoff.spaces import suggest_plan
from tradeoff.storage import open_storage


def answering(choices: list[int], figures=lambda x: [float(x)]):
    """An objective over one categorical knob that, like the runner, answers a plan measured
    before from the study and marks the trial as its repeat."""

    def objective(trial: optuna.Trial) -> list[float]:
        x = trial.suggest_categorical("x", choices)
        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        twin = next((t for t in done if t.params == trial.params), None)
        if twin is not None:
            trial.set_user_attr(DUPLICATE_ATTR, twin.number)
            return list(twin.values)
        return figures(x)

    return objective


def random_study(storage, name: str, seed: int) -> optuna.Study:
    sampler = optuna.samplers.RandomSampler(seed=seed)
    return optuna.create_study(storage=storage, study_name=name, sampler=sampler)


def test_repeated_plans_do_not_use_up_the_budget(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'w.db'}", heartbeat_interval=None)
    study = random_study(storage, "w", seed=0)
    for x in (1, 1, 2, 1):  # two repeats among the first four proposals
        study.enqueue_trial({"x": x})
    ran = run_worker(study, storage, answering([1, 2, 3, 4, 5, 6]), budget=5, poll_s=0.01)
    measured, running = counts(study)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert measured == ran == 5 and running == 0
    assert len({t.params["x"] for t in complete}) == 5 and len(complete) >= 7
    assert sum(DUPLICATE_ATTR in t.user_attrs for t in complete) == len(complete) - 5


def test_this_runs_n_trials_measure_n_new_plans(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'n.db'}", heartbeat_interval=None)
    study = random_study(storage, "n", seed=1)
    ran = run_worker(study, storage, answering(list(range(8))), budget=None, n_trials=4, poll_s=0.01)
    assert ran == 4 and counts(study)[0] == 4
    # a worker with its own --n-trials on a study with a larger budget stops at its own number
    ran = run_worker(study, storage, answering(list(range(8))), budget=100, n_trials=2, poll_s=0.01)
    assert ran == 2 and counts(study)[0] == 6


def test_a_worker_stops_after_too_many_repeats_in_a_row_and_says_why(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", heartbeat_interval=None)
    study = random_study(storage, "r", seed=2)
    said = []
    # two plans in the whole space: after both, every proposal repeats one
    objective = answering([1, 2])
    ran = run_worker(study, storage, objective, budget=10, max_repeats=6, on_wait=said.append, poll_s=0.01)
    assert ran == 2 and counts(study)[0] == 2
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(DUPLICATE_ATTR in t.user_attrs for t in complete[-6:])
    assert said and said[-1].startswith("stopped: the sampler proposed 6 plans in a row that were already")


def _synthetic(plan, objectives) -> list[float]:
    """The study's objectives with a trade-off, from the plan's numbers (no model is built)."""
    w, p, r, b = plan.student_width, plan.prune_ratio, plan.rank_ratio, plan.weight_bits
    size = w * w * (1 - p) * r * b / 32
    accuracy = 1 - 0.3 * (1 - w) ** 2 - 0.4 * p**2 - 0.2 * (1 - r) ** 2 - (0.3 if b == 2 else 0)
    figures = {"accuracy": accuracy, "size_bytes": size, "latency_ms": size**0.5, "energy_mj": size * 2}
    return [figures[o] for o in objectives]


def test_two_workers_on_one_study_do_not_propose_the_same_plans(tmp_path):
    """Two workers (threads, each with its own sampler as each process has) share a study with
    the default sampler, proposing under the study lock as the search command does: while one
    measures a plan, the other never measures the same one, and hardly any plan is proposed twice."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    storage = open_storage(url, heartbeat_interval=None)
    study, config, _ = open_study(storage, "two", {"model": "tiny_resnet"}, n_trials=30)
    assert config.sampler == "auto"
    running: dict[int, tuple] = {}
    clashes, lock = [], threading.Lock()

    def objective(trial: optuna.Trial) -> list[float]:
        plan = suggest_plan(trial, config.space)
        key = tuple(sorted(trial.params.items()))
        with lock:
            if key in running.values():
                clashes.append(key)
            running[trial.number] = key
        time.sleep(0.02)  # both workers are inside a trial most of the time
        with lock:
            del running[trial.number]
        return _synthetic(plan, config.objectives)

    def work(who: str) -> None:
        own = open_storage(url, heartbeat_interval=None)
        mine = optuna.load_study(study_name="two", storage=own)
        mine.sampler = study_sampler(config, len(mine.trials), who)
        propose = lambda t: suggest_plan(t, config.space)  # noqa: E731
        run_worker(mine, own, objective, propose=propose, budget=30, poll_s=0.01)

    threads = [threading.Thread(target=work, args=(f"host:{n}",)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = optuna.load_study(study_name="two", storage=storage)
    complete = [t for t in final.trials if t.state == optuna.trial.TrialState.COMPLETE]
    measured = [t for t in complete if DUPLICATE_ATTR not in t.user_attrs]
    assert counts(final)[0] == 30 and len(measured) == 30
    assert not clashes
    assert len({tuple(sorted(t.params.items())) for t in complete}) >= len(complete) - 2
    assert len(complete) <= 34


def test_workers_seed_their_samplers_apart_and_a_search_reproducibly():
    from tradeoff.search.study.sampler import sampler_seed

    assert sampler_seed(0, 5) == sampler_seed(0, 5)
    assert len({sampler_seed(0, 5, "a:1"), sampler_seed(0, 5, "a:2"), sampler_seed(0, 5)}) == 3
    assert sampler_seed(0, 5) != sampler_seed(0, 6) != sampler_seed(1, 6)
    assert SearchConfig().validated().sampler == "auto"


def test_the_gaussian_process_sampler_proposes_plans_of_a_multi_objective_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'gp.db'}"
    storage = open_storage(url, heartbeat_interval=None)
    # one value per knob: the objective asks `suggest_plan`, as a global study does
    given = {"model": "tiny_resnet", "sampler": "gp", "granularity": "global"}
    study, config, _ = open_study(storage, "gp", given, n_trials=13)
    study.sampler = study_sampler(config)
    objective = lambda t: _synthetic(suggest_plan(t, config.space), config.objectives)  # noqa: E731
    ran = run_worker(study, storage, objective, budget=13, poll_s=0.01)
    proposed = [t for t in study.trials if "role" not in t.user_attrs]
    assert ran == 13 and len(proposed) >= 3  # after the 10 plans of the start design
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_a_workers_cores_are_its_containers_limit(tmp_path):
    from tradeoff.search.study.worker import available_cores

    pinned = len(__import__("os").sched_getaffinity(0))
    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")  # limits.cpu: 1.5 -> 2 threads
    assert available_cores(str(limit)) == min(pinned, 2)
    limit.write_text("max 100000\n")  # no limit: the cores it may run on
    assert available_cores(str(limit)) == pinned
    assert available_cores(str(tmp_path / "absent")) == pinned


def test_a_plan_proposed_while_a_running_trial_measures_it_waits_and_is_answered_from_it(tmp_path):
    """The same plan handed to two workers at once (queued twice here, so it is certain): the
    second waits for the first under its heartbeat and repeats its figures; it is measured once."""
    url = f"sqlite:///{tmp_path / 'twin.db'}"
    storage = open_storage(url, heartbeat_interval=None)
    study = random_study(storage, "twin", seed=0)
    study.enqueue_trial({"x": 3})
    study.enqueue_trial({"x": 3}, skip_if_exists=False)
    inside, measured, lock = [], [], threading.Lock()
    first_in = threading.Event()
    inner = answering([1, 2, 3])

    def objective(trial: optuna.Trial) -> list[float]:
        with lock:
            inside.append(trial.number)
        first_in.set()
        values = inner(trial)
        if DUPLICATE_ATTR not in trial.user_attrs:
            measured.append(trial.number)
            time.sleep(0.5)  # the other worker asks meanwhile
        with lock:
            inside.remove(trial.number)
        return values

    def work(wait_first: bool) -> None:
        own = open_storage(url, heartbeat_interval=None)
        mine = optuna.load_study(study_name="twin", storage=own)
        if wait_first:
            first_in.wait(10)
        run_worker(
            mine,
            own,
            objective,
            propose=lambda t: t.suggest_categorical("x", [1, 2, 3]),
            budget=None,
            n_trials=1,
            poll_s=0.01,
        )

    threads = [threading.Thread(target=work, args=(w,)) for w in (False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trials = optuna.load_study(study_name="twin", storage=storage).trials
    # (the repeat is not counted: that worker then goes on to a plan of its own)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert 1 not in measured and trials[1].user_attrs[DUPLICATE_ATTR] == 0
    assert trials[1].values == trials[0].values


def test_a_search_on_a_share_runs_on_the_threads_asked_and_leaves_the_callers_threads(tmp_path, monkeypatch):
    """on_a_share (the teacher, sensitivity pass and trials of `tradeoff search`): torch runs on
    the --threads asked for, or on this process's share of the cores; either way the caller's
    thread count is back afterwards, even when the search fails."""
    import os

    import pytest
    import torch

    from tradeoff.search.study.worker import available_cores, on_a_share

    monkeypatch.setenv("TRADEOFF_RUN_DIR", str(tmp_path))
    (tmp_path / str(os.getppid())).touch()  # another tradeoff process on this host, alive
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(5)
        with on_a_share(3) as share:
            assert torch.get_num_threads() == 3 and share() == max(1, available_cores() // 2)
        assert torch.get_num_threads() == 5 and os.listdir(tmp_path) == [str(os.getppid())]
        with pytest.raises(RuntimeError), on_a_share():
            assert torch.get_num_threads() == max(1, available_cores() // 2)
            raise RuntimeError("a failed trial")
        assert torch.get_num_threads() == 5 and os.listdir(tmp_path) == [str(os.getppid())]
    finally:
        torch.set_num_threads(before)
