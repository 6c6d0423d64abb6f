"""optuna-dashboard on a tradeoff study, with each trial's constraints where the dashboard looks.

optuna-dashboard (0.21) reads a trial's constraints from the system attribute ``constraints``,
the list form that Optuna wrote before version 5. Optuna 5's ``trial.set_constraint(name,
value)`` stores one attribute per name instead, so without help the dashboard sees no
constraints and draws infeasible trials on its Pareto front as feasible. :func:`serve` gives
the dashboard's trial serializer the values of ``FrozenTrial.constraints`` (the mapping Optuna
5 reads both forms into), in name order, and changes nothing that is stored.
"""

from __future__ import annotations

import functools

import optuna

from tradeoff.search.records import constraints_of


def _with_constraints(serialize):
    @functools.wraps(serialize)
    def serialize_frozen_trial(study_id, trial, study_system_attrs):
        out = serialize(study_id, trial, study_system_attrs)
        if not out.get("constraints"):
            out["constraints"] = [v for _, v in sorted(constraints_of(trial).items())]
        return out

    serialize_frozen_trial.tradeoff_adapted = True
    return serialize_frozen_trial


def adapt_constraints() -> None:
    """Make optuna-dashboard's serializer report Optuna 5's named constraints (idempotent)."""
    from optuna_dashboard import _serializer

    if not getattr(_serializer.serialize_frozen_trial, "tradeoff_adapted", False):
        _serializer.serialize_frozen_trial = _with_constraints(_serializer.serialize_frozen_trial)


def serve(storage: optuna.storages.BaseStorage, *, host: str, port: int, artifact_store=None) -> None:
    from optuna_dashboard import run_server

    adapt_constraints()
    run_server(storage, host=host, port=port, artifact_store=artifact_store)
