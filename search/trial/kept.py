"""Models a study keeps in its artifact store, shared by every worker.

- A fine-tuned float model per structure (``structure_key``: the structural knobs' configs), as
  a PyTorch state dict read back with ``torch.load(weights_only=True)`` (tensors only: nothing
  in the file runs). A plan that differs from a trained one only in its post-training knobs
  (bit-width) loads it and quantizes, instead of fine-tuning again. The study attribute
  ``tradeoff:float:<key>`` names the artifact, its SHA-256 and size.
- The deployed model of a complete trial (the ONNX file that was measured, for the ONNX
  runtimes), named by the trial's ``kept_model`` attribute with its SHA-256 and size, so that
  ``tradeoff export`` writes it without rebuilding.

``--keep-models`` bounds the disk: ``front`` (default) keeps the deployed models of the
trials on the current front and the float models of their structures (and of structures whose
post-training variants are still to be measured), removing the rest as the front moves;
``all`` keeps everything; ``none`` keeps no deployed model and a float model only until its
variants are measured. A removed artifact is recorded as ``tradeoff:dropped:<trial>`` (a
trial's model) or as ``removed`` in the structure's attribute; export then rebuilds.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import tempfile
from collections.abc import Mapping
from typing import Any

import optuna
import torch
from optuna.artifacts import upload_artifact
from optuna.trial import TrialState

from tradeoff.search.study.records import (
    DROPPED_PREFIX,
    DUPLICATE_ATTR,
    FLOAT_PREFIX,
    KEPT_ATTR,
    LEGACY_KEPT_ATTR,
    PLAN_ATTR,
    feasible,
)
from tradeoff.storage.errors import StorageError

KEEP_MODELS = ("front", "all", "none")
MEMORY_SLOTS = 4  # float models a worker keeps in memory (its next trials are often their variants)


def read_bytes(store, artifact_id: str) -> bytes:
    """The bytes of artifact ``artifact_id`` in ``store``."""
    with store.open_reader(artifact_id) as f:
        return f.read()


def upload_bytes(store, target, data: bytes, name: str) -> str:
    """Store ``data`` as artifact ``name`` of ``target`` (a study or trial); returns its id."""
    with tempfile.TemporaryDirectory(prefix="tradeoff-weights-") as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return upload_artifact(artifact_store=store, file_path=path, study_or_trial=target)


def kept_meta(trial) -> dict | None:
    """Where a trial's deployed model is kept (artifact id, SHA-256, bytes), or None."""
    return trial.user_attrs.get(KEPT_ATTR) or trial.user_attrs.get(LEGACY_KEPT_ATTR)


class KeptModels:
    """The study's kept models (see the module docstring); ``store`` None keeps float models in
    this process's memory only."""

    def __init__(self, store=None, *, keep: str = "front"):
        if keep not in KEEP_MODELS:
            raise ValueError(f"`keep` must be one of {', '.join(KEEP_MODELS)}, not {keep!r}.")
        self.store, self.keep = store, keep
        self._memory: collections.OrderedDict[str, tuple[dict, dict]] = collections.OrderedDict()

    # -- float models per structure ---------------------------------------------------------

    @staticmethod
    def _float_attr(key: str) -> str:
        return FLOAT_PREFIX + key[:32]

    def get_float(self, study: optuna.Study | None, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(state dict, its record) of the fine-tuned float model of structure ``key``, or None."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.store is None or study is None:
            return None
        meta = study.user_attrs.get(self._float_attr(key))
        if not isinstance(meta, Mapping) or meta.get("removed") or "artifact_id" not in meta:
            return None
        try:
            data = read_bytes(self.store, meta["artifact_id"])
        except Exception:  # noqa: BLE001 - removed by another worker, or unreadable: train again
            return None
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            return None
        try:  # tensors only: a file that would run code is refused (and the plan trained again)
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError):
            return None
        self._remember(key, state, dict(meta))
        return state, dict(meta)

    def put_float(
        self, study: optuna.Study | None, key: str, state: Mapping[str, torch.Tensor], trial: int
    ) -> None:
        state = {k: v.detach().clone() for k, v in state.items()}
        meta: dict[str, Any] = {"trial": trial}
        if self.store is not None and study is not None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            data = buffer.getvalue()
            meta.update(
                artifact_id=upload_bytes(self.store, study, data, f"float-{key[:16]}.pt"),
                sha256=hashlib.sha256(data).hexdigest(),
                bytes=len(data),
                structure=key,
            )
            study.set_user_attr(self._float_attr(key), meta)
        self._remember(key, state, meta)

    def _remember(self, key: str, state: dict, meta: dict) -> None:
        self._memory[key] = (state, meta)
        self._memory.move_to_end(key)
        while len(self._memory) > MEMORY_SLOTS:
            self._memory.popitem(last=False)

    # -- deployed models per trial ----------------------------------------------------------

    def put_trial(
        self, trial: optuna.Trial, data: bytes, *, file: str, extra: Mapping[str, Any]
    ) -> dict | None:
        """Keep ``data`` (the deployed model file ``file``) for ``trial``; returns its record
        (also set as the trial's ``weights`` attribute), None when nothing is kept."""
        if self.store is None or self.keep == "none":
            return None
        meta = {
            "artifact_id": upload_bytes(self.store, trial, data, file),
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "file": file,
            **extra,
        }
        trial.set_user_attr(KEPT_ATTR, meta)
        return meta

    def get_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> tuple[bytes, dict] | None:
        """(the kept deployed model's bytes, its record) of ``trial``; None when it kept none or
        it was removed. A file whose SHA-256 differs from the record is refused."""
        meta = kept_meta(trial)
        if (
            self.store is None
            or not isinstance(meta, Mapping)
            or f"{DROPPED_PREFIX}{trial.number}" in study.user_attrs
        ):
            return None
        try:
            data = read_bytes(self.store, meta["artifact_id"])
        except Exception:  # noqa: BLE001 - gone from the store: rebuild
            return None
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise StorageError(
                f"trial #{trial.number}'s kept model (artifact {meta['artifact_id']}) do not match their "
                "SHA-256: the artifact store was changed; remove the file to make export rebuild it"
            )
        return data, dict(meta)

    # -- the bound --------------------------------------------------------------------------

    def tidy(self, study: optuna.Study, objectives, structure_of) -> dict[str, int]:
        """Remove what ``keep`` does not keep; ``structure_of(plan dict)`` gives a plan's
        structure key. Returns the bytes and counts kept now."""
        from tradeoff.search.views.cost import measured, pareto

        trials = study.get_trials(deepcopy=False)
        attrs = study.user_attrs
        complete = measured(trials, objectives)
        on_front = {t.number for t in pareto([t for t in complete if feasible(t)], objectives)}
        pending = {t.number for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
        keep_structures = set()
        for t in trials:
            # a waiting (enqueued) trial holds its plan in Optuna's fixed_params until it runs
            plan = t.user_attrs.get(PLAN_ATTR) or t.params or t.system_attrs.get("fixed_params")
            if plan and (t.number in pending or (self.keep != "none" and t.number in on_front)):
                keep_structures.add(structure_of(plan)[:32])
        kept = {"trial_bytes": 0, "trials": 0, "float_bytes": 0, "floats": 0}
        if self.store is None:
            return kept
        for t in trials:
            meta = kept_meta(t)
            if not isinstance(meta, Mapping) or DUPLICATE_ATTR in t.user_attrs:
                continue
            dropped = f"{DROPPED_PREFIX}{t.number}" in attrs
            if not dropped and self.keep == "front" and t.number not in on_front and t.number not in pending:
                self._remove(meta["artifact_id"])
                study.set_user_attr(f"{DROPPED_PREFIX}{t.number}", "off the front")
                dropped = True
            if not dropped:
                kept["trial_bytes"] += int(meta.get("bytes", 0))
                kept["trials"] += 1
        for name, meta in attrs.items():
            if not name.startswith(FLOAT_PREFIX) or not isinstance(meta, Mapping) or meta.get("removed"):
                continue
            if self.keep != "all" and name[len(FLOAT_PREFIX) :] not in keep_structures:
                self._remove(meta["artifact_id"])
                study.set_user_attr(name, {**meta, "removed": "no kept or pending trial uses it"})
                self._memory.pop(meta.get("structure", ""), None)
                continue
            kept["float_bytes"] += int(meta.get("bytes", 0))
            kept["floats"] += 1
        return kept

    def _remove(self, artifact_id: str) -> None:
        try:
            self.store.remove(artifact_id)
        except Exception:  # noqa: BLE001 - already removed (another worker tidied first)
            pass
