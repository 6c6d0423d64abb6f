"""The study's sensitivity table: measured once, kept in the artifact store, read by every worker.

``ensure_sensitivity`` measures the table (``spaces.sensitivity``) the first time a study that
allocates per layer runs (``create`` or the first ``search``), under the study lock, uploads it
as a JSON artifact and records its id, SHA-256 and a summary in the study attribute
``tradeoff:sensitivity``; every later run, worker and export reads it back (SHA-256 checked)
and never measures again. ``table_text`` is what ``tradeoff sensitivity`` prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json

import optuna

from tradeoff.search.errors import UsageError
from tradeoff.search.study.records import SENSITIVITY_ATTR
from tradeoff.search.trial.kept import read_bytes, upload_bytes
from tradeoff.spaces import KNOBS, allocatable_knobs
from tradeoff.spaces.sensitivity import SensitivityTable, compression_order, measure_sensitivity


def load_sensitivity(study: optuna.Study, store) -> SensitivityTable | None:
    """The study's table (None when it has none); UsageError when it cannot be read or its
    SHA-256 does not match."""
    meta = study.user_attrs.get(SENSITIVITY_ATTR)
    if not isinstance(meta, dict):
        return None
    if store is None:
        raise UsageError("the study's sensitivity table is in its artifact store: give --artifacts")
    try:
        data = read_bytes(store, meta["artifact_id"])
    except Exception as e:  # noqa: BLE001 - a missing file or an unreachable store
        raise UsageError(
            f"cannot read the study's sensitivity table (artifact {meta['artifact_id']}): {e}; "
            "point --artifacts at the study's artifact store"
        ) from None
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise UsageError("the study's sensitivity table is corrupt (SHA-256 mismatch)")
    return SensitivityTable.from_dict(json.loads(data))


def measure_for_study(config, task, teacher, *, log=lambda _msg: None) -> SensitivityTable:
    """The sensitivity table of ``teacher`` on ``task`` as a study of ``config`` measures it: on
    the validation split, for every per-layer knob the space can switch on, at its settings for
    the space (``Knob.sensitivity_values``: the space's bit-widths, say), with the study's
    distillation temperature. A knob not ``allocated_by_default`` (the student's width per stage)
    is measured only where the study's ``allocate`` names it; without rows it stays uniform."""
    settings = {
        k.name: k.sensitivity_values(config.space[k.name])
        for k in allocatable_knobs()
        if k.name in config.space
        and k.can_switch_on(config.space[k.name])
        and (k.allocated_by_default or k.name in config.allocate)
    }
    return measure_sensitivity(
        teacher,
        task.val.x,
        task.val.y,
        example_input=task.example_input,
        num_classes=task.num_classes,
        settings=settings,
        temperature=config.kd_temperature,
        seed=config.seed,
        log=log,
    )


def ensure_sensitivity(
    study: optuna.Study, storage, config, task, teacher, store, *, log
) -> SensitivityTable:
    """The study's table, measured and stored now if it has none (once: under the study lock)."""
    table = load_sensitivity(study, store)
    if table is not None:
        return table
    lock = storage.lock(study.study_name) if hasattr(storage, "lock") else contextlib.nullcontext()
    with lock:
        fresh = optuna.load_study(study_name=study.study_name, storage=storage)
        table = load_sensitivity(fresh, store)
        if table is not None:
            return table
        log("measuring the sensitivity table (once per study) ...")
        table = measure_for_study(config, task, teacher, log=log)
        data = table.to_json().encode()
        artifact_id = upload_bytes(store, study, data, "sensitivity.json")
        study.set_user_attr(
            SENSITIVITY_ATTR,
            {
                "artifact_id": artifact_id,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                **table.summary(),
            },
        )
    return table


def title(technique: str) -> str:
    """What a knob's column of the sensitivity table is (``Knob.title``), for people."""
    knob = KNOBS.get(technique)
    return (knob.title if knob else "") or technique


def table_text(table: SensitivityTable) -> str:
    """The table for people: per technique and layer group, the effect at each measured value
    (the study's metric), with the layer's share of parameters, MACs and latency."""
    metric = table.metric
    unit = "distillation-loss increase" if metric == "loss" else "accuracy drop (points)"
    scale = 1.0 if metric == "loss" else 100.0
    totals = {
        k: sum(layer[k] for layer in table.layers.values()) or 1 for k in ("params", "macs", "latency_ms")
    }
    p = table.predictor
    rho = ", ".join(f"{k} {v:.2f}" for k, v in p.get("spearman", {}).items())
    lines = [
        f"sensitivity of each layer group alone, on {table.images} held-out images; effect = {unit} "
        f"(the better predictor: Spearman {rho} over {p.get('combinations', 0)} random combinations); "
        f"measured in {sum(table.seconds.values()):.1f} s",
    ]
    for technique, rows in table.rows.items():
        if not rows:
            continue
        values = compression_order(technique, {v for r in rows for v in r["points"]})
        head = f"{'layer group':<34} {'params':>7} {'MACs':>6} {'latency':>7}  " + " ".join(
            f"{v:>7g}" for v in values
        )
        lines += ["", f"{technique}: {title(technique)} (shares of the teacher: params, MACs, latency)", head]
        for r in rows:
            share = {
                k: sum(table.layers.get(n, {}).get(k, 0) for n in r["layers"]) / totals[k]
                for k in ("params", "macs", "latency_ms")
            }
            cells = " ".join(
                f"{r['points'][v][metric] * scale:>7.3f}" if v in r["points"] else f"{'':>7}" for v in values
            )
            shares = f"{share['params']:>7.1%} {share['macs']:>6.1%} {share['latency_ms']:>7.1%}"
            lines.append(f"{r['group'][:34]:<34} {shares}  {cells}")
    if table.skipped:
        lines += ["", "skipped: " + "; ".join(table.skipped)]
    return "\n".join(lines)
