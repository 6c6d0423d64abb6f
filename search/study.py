"""Open or create a study whose configuration lives in the study itself."""

from __future__ import annotations

import contextlib

import optuna
from optuna.exceptions import DuplicatedStudyError

from tradeoff.search.config import SearchConfig
from tradeoff.search.errors import UsageError
from tradeoff.search.plugins import import_plugin_modules
from tradeoff.search.records import CONFIG_ATTR, ROLE_ATTR
from tradeoff.spaces import Plan, probe_plans, space_filling_plans


def make_sampler(config: SearchConfig) -> optuna.samplers.BaseSampler:
    """NSGA-II, set explicitly (Optuna 5 changed the multi-objective default). Constraints reach
    it through ``trial.set_constraint`` in the runner: feasible plans dominate infeasible ones.
    A scalarized study (one objective, the weighted cost) uses TPE, Optuna's single-objective
    default, with the same constraints."""
    if config.scalarize:
        return optuna.samplers.TPESampler()
    return optuna.samplers.NSGAIISampler(population_size=config.population_size or 50)


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
    return config


def open_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    given: dict,
    *,
    n_trials: int | None = None,
    create: bool = True,
    prepare=None,
) -> tuple[optuna.Study, SearchConfig, bool]:
    """(study, its configuration, whether it was created now).

    An existing study keeps its stored configuration; a setting in ``given`` that differs from
    it is an error, so a resumed or joined study can never run another search by accident.
    ``prepare(config)`` runs before a new study is stored (to check the data and the model), so
    bad input leaves nothing behind. The look and the creation happen under the study lock, so
    processes that start at once create the study once, and none sees it half made (without its
    configuration).
    """
    lock = storage.lock(study_name) if hasattr(storage, "lock") else contextlib.nullcontext()
    with lock:
        return _open_study(storage, study_name, given, n_trials=n_trials, create=create, prepare=prepare)


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
        study.enqueue_trial(Plan().params(), user_attrs={ROLE_ATTR: "baseline"}, skip_if_exists=True)
        probes = probe_plans(config.space)
        for plan in probes:
            study.enqueue_trial(
                plan.params(), user_attrs={ROLE_ATTR: "single-technique"}, skip_if_exists=True
            )
        # the rest of NSGA-II's first generation: a Latin hypercube over the space, not random
        n_fill = (config.population_size or 50) - 1 - len(probes)
        for plan in space_filling_plans(config.space, n_fill, seed=config.seed):
            study.enqueue_trial(plan.params(), user_attrs={ROLE_ATTR: "space-filling"}, skip_if_exists=True)
        created = True
    else:
        diff = config.differences(given)
        if diff:
            raise UsageError(
                f"study {study_name!r} exists with a different configuration: {'; '.join(diff)}; "
                "drop those options to resume it, or choose a new --study-name"
            )
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(config))
    return study, config, created
