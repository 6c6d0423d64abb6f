"""optuna-dashboard on a tradeoff study: read-only unless asked, with each trial's constraints
where the dashboard looks.

Read-only by default. optuna-dashboard serves its whole API without authentication: an
anonymous ``DELETE /api/studies/1`` deletes the study and every artifact of it (the teacher
included), ``POST /api/studies/1/rename`` renames it under every worker. :func:`serve` puts the
dashboard's WSGI app behind :class:`ReadOnly`, which answers every request that is not a read
(any method but GET, HEAD and OPTIONS) with 403 and a reason the page shows, unless the user
passed ``--allow-writes``. Reads are unchanged: the trials, the notes and figures tradeoff
wrote, the artifacts.

Constraints. optuna-dashboard (0.21) reads a trial's constraints from the system attribute
``constraints``, the list form that Optuna wrote before version 5. Optuna 5's
``trial.set_constraint(name, value)`` stores one attribute per name instead, so without help
the dashboard sees no constraints and draws infeasible trials on its Pareto front as feasible.
:func:`serve` gives the dashboard's trial serializer the values of ``FrozenTrial.constraints``
(the mapping Optuna 5 reads both forms into), in name order, and changes nothing that is stored.
"""

from __future__ import annotations

import functools
import ipaddress
import json

import optuna

from tradeoff.search.study.records import constraints_of

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSED = (
    "this dashboard is read-only: it does not delete, rename or change the study, its trials, notes "
    "or artifacts; restart it with `tradeoff dashboard --allow-writes` to allow that"
)


class ReadOnly:
    """WSGI middleware: pass reads to ``app``, refuse every other request with 403 and a JSON
    ``reason`` (the field optuna-dashboard's page shows when a request fails)."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() in READ_METHODS:
            return self.app(environ, start_response)
        body = json.dumps({"reason": REFUSED}).encode()
        start_response(
            "403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


def loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def exposure_warning(host: str, *, allow_writes: bool) -> str | None:
    """The warning for binding a non-loopback address (None for a loopback one)."""
    if loopback(host):
        return None
    what = (
        "read, change, rename and DELETE the study and its artifacts (--allow-writes)"
        if allow_writes
        else "read every trial and download the study's artifacts (the teacher and kept models); "
        "writes stay refused"
    )
    return (
        f"warning: --host {host} serves the dashboard without authentication to every machine that "
        f"reaches this one: anyone there can {what}. Bind 127.0.0.1 and tunnel (ssh -L) to keep it private"
    )


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


def dashboard_app(storage: optuna.storages.BaseStorage, *, artifact_store=None, allow_writes: bool = False):
    """The dashboard's WSGI app on ``storage``: read-only unless ``allow_writes``."""
    from optuna_dashboard import wsgi

    adapt_constraints()
    app = wsgi(storage, artifact_store=artifact_store)
    return app if allow_writes else ReadOnly(app)


def serve(
    storage: optuna.storages.BaseStorage,
    *,
    host: str,
    port: int,
    artifact_store=None,
    allow_writes: bool = False,
) -> None:
    """Serve the dashboard until interrupted (bottle's wsgiref server, as optuna-dashboard's
    ``run_server``)."""
    from bottle import run

    app = dashboard_app(storage, artifact_store=artifact_store, allow_writes=allow_writes)
    run(app, host=host, port=port)
