"""Open or create a study whose configuration lives in the study itself."""

from __future__ import annotations

import contextlib
import dataclasses

import optuna
from optuna.exceptions import DuplicatedStudyError

from tradeoff.search.errors import UsageError
from tradeoff.search.plugins import import_plugin_modules
from tradeoff.search.study.config import SearchConfig
from tradeoff.search.study.records import CONFIG_ATTR, ROLE_ATTR, SAMPLER_ATTR
from tradeoff.search.study.sampler import (
    describe,
    make_sampler,
    sampler_seed,
    start_design,
)


def study_sampler(config: SearchConfig, n_trials: int = 0, who: str = "") -> optuna.samplers.BaseSampler:
    """The study's sampler in this process (``search.study.sampler``), seeded per process: ``who`` is
    empty for a ``search`` (reproducible) and the host and process of a worker."""
    return make_sampler(
        config.sampler,
        seed=sampler_seed(config.seed, n_trials, who),
        population=config.population_size,
        scalarized=bool(config.scalarize),
        joint=config.density == "joint",
    )


def study_start(config: SearchConfig) -> list[tuple[dict, str]]:
    """The study's start design: (params, role) pairs, enqueued when the study is created. An
    allocated study's design covers its own space: the bit budgets it searches (8, 6, 4, 3, 2
    average bits, not only the uniform widths), and sharpness values spread evenly over [0, 1]
    (the baseline none: it compresses nothing). In the per-layer replay (BENCHMARKS.md) this
    design is what lifts the allocated search above random search at 20-80 plans."""
    from tradeoff.spaces.allocation import SHARPNESS, SHARPNESS_STEP, budget_space

    allocated = config.granularity == "allocated"
    space = budget_space(config.space) if allocated else dict(config.space)
    design = start_design(space, config.sampler, population=config.population_size, seed=config.seed)
    out = [(plan.params(), role) for plan, role in design]
    if allocated:
        n = max(1, len(out) - 1)
        for i, (params, _role) in enumerate(out[1:]):
            steps = round((i + 0.5) / n / SHARPNESS_STEP)
            params[SHARPNESS] = round(min(1.0, steps * SHARPNESS_STEP), 10)
    return out


def sampler_line(config: SearchConfig) -> str:
    """The sampler of a study and why, as printed when the search starts and stored with it."""
    return describe(
        config.sampler,
        population=config.population_size,
        start=len(study_start(config)),
        density=config.density,
    )


def stored_config(storage: optuna.storages.BaseStorage, study_name: str) -> SearchConfig | None:
    """The configuration stored with ``study_name``, or None when there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    attrs = storage.get_study_user_attrs(study_id)
    if CONFIG_ATTR not in attrs:
        raise UsageError(
            f"study {study_name!r} exists but was not made by tradeoff; choose another --study-name"
        )
    config = SearchConfig.from_json(attrs[CONFIG_ATTR])
    import_plugin_modules(config.plugins)  # the study's own knobs and figures, before its space is read
    return with_goals(config, attrs)


def with_goals(config: SearchConfig, attrs: dict) -> SearchConfig:
    """``config`` with the bounds its relative goals resolved to (once the baseline was measured)
    among its constraints."""
    from tradeoff.search.study.goals import GOALS_ATTR

    resolved = attrs.get(GOALS_ATTR) or {}
    bounds = {n: float(g["bound"]) for n, g in resolved.items() if n in config.goals}
    return dataclasses.replace(config, constraints={**config.constraints, **bounds}) if bounds else config


def open_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    given: dict,
    *,
    n_trials: int | None = None,
    create: bool = True,
    prepare=None,
    who: str = "",
) -> tuple[optuna.Study, SearchConfig, bool]:
    """(study, its configuration, whether it was created now).

    An existing study keeps its stored configuration; a setting in ``given`` that differs from
    it is an error, so a resumed or joined study can never run another search by accident.
    ``prepare(config)`` runs before a new study is stored (to check the data and the model), so
    bad input leaves nothing behind. The look and the creation happen under the study lock, so
    processes that start at once create the study once, and none sees it half made (without its
    configuration). ``who`` seeds this process's sampler (``study_sampler``).
    """
    lock = storage.lock(study_name) if hasattr(storage, "lock") else contextlib.nullcontext()
    with lock:
        study, config, created = _open_study(
            storage, study_name, given, n_trials=n_trials, create=create, prepare=prepare
        )
    n = len(study.get_trials(deepcopy=False))
    study.sampler = study_sampler(config, n, who)
    return study, config, created


def _open_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    given: dict,
    *,
    n_trials: int | None,
    create: bool,
    prepare,
) -> tuple[optuna.Study, SearchConfig, bool]:
    config = stored_config(storage, study_name)
    created = False
    if config is None:
        if not create:
            raise UsageError(f"no study named {study_name!r} in this storage; create it first")
        try:
            config = SearchConfig(**given).validated(n_trials=n_trials)
        except TypeError as e:
            raise UsageError(f"bad search configuration: {e}") from None
        if prepare is not None:
            prepare(config)
        try:
            study = optuna.create_study(storage=storage, study_name=study_name, directions=config.directions)
        except DuplicatedStudyError:  # another process created it between our look and now
            return _open_study(storage, study_name, given, n_trials=n_trials, create=False, prepare=prepare)
        study.set_metric_names(config.metric_names)
        study.set_user_attr(CONFIG_ATTR, config.to_json())
        study.set_user_attr(SAMPLER_ATTR, sampler_line(config))
        for params, role in study_start(config):
            study.enqueue_trial(params, user_attrs={ROLE_ATTR: role}, skip_if_exists=True)
        created = True
    else:
        diff = config.differences(given)
        if diff:
            raise UsageError(
                f"study {study_name!r} exists with a different configuration: {'; '.join(diff)}; "
                "drop those options to resume it, or choose a new --study-name"
            )
    study = optuna.load_study(study_name=study_name, storage=storage)
    return study, config, created
