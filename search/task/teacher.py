"""The teacher: trained once per task, kept in the study's artifact store for every worker.

Order of lookup: the study's own teacher artifact (checked against its SHA-256), then the
local cache (``$TRADEOFF_CACHE`` or ``~/.cache/tradeoff``, keyed by the task's fingerprint, so
a new study of the same task does not train again), then training.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

import optuna
import torch
from optuna.artifacts import download_artifact, upload_artifact
from torch import nn

from tradeoff.search.errors import UsageError
from tradeoff.search.study.records import TEACHER_ATTR
from tradeoff.search.task.models import at_chance, check_finite, check_not_chance, load_weights_
from tradeoff.search.task.tasks import Task
from tradeoff.search.task.training import bf16_supported, train_classifier
from tradeoff.search.trial.measure import accuracy
from tradeoff.storage.artifacts import sha256_file, writable_folder

RECIPE = 3  # bump when train_classifier changes, so cached teachers of the old recipe are not reused
VAL_CHECK_IMAGES = 2000  # validation images the per-epoch progress line is scored on, at most


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def cache_dir() -> str:
    path = os.environ.get("TRADEOFF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tradeoff")
    return writable_folder(path, what="the teacher cache", variable="TRADEOFF_CACHE")


def _load(task: Task, path: str) -> nn.Module:
    model = task.build()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"teacher checkpoint {path} does not load into {task.model_name}: {e}") from None
    check_finite(model, path)
    return model.eval()


def _sidecar(path: str) -> str:
    return path + ".sha256"


def _save_atomic(state: dict, path: str) -> None:
    """Write the checkpoint and, beside it, its SHA-256 (checked on every later load)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    digest = sha256_file(tmp)
    with open(_sidecar(path) + ".tmp", "w") as f:
        f.write(digest + "\n")
    os.replace(_sidecar(path) + ".tmp", _sidecar(path))
    os.replace(tmp, path)


def _cached(path: str, log) -> bool:
    """Whether the cached checkpoint at ``path`` is there and unchanged since it was written (its
    SHA-256 matches the one saved beside it); a changed or unrecorded one is removed."""
    if not os.path.exists(path):
        return False
    try:
        with open(_sidecar(path)) as f:
            expected = f.read().strip()
    except OSError:
        expected = ""
    if expected and sha256_file(path) == expected:
        return True
    log(f"the cached teacher {path} changed since it was written (or has no recorded SHA-256); not using it")
    for stale in (path, _sidecar(path)):
        with contextlib.suppress(OSError):
            os.remove(stale)
    return False


def train_teacher(task: Task, *, device: str = "cpu", log=print) -> tuple[nn.Module, str, float]:
    """The task's teacher: the user's checkpoint, the local cache, or trained now:
    (model, checkpoint path, seconds of training)."""
    label = "folder" if os.path.isdir(task.name) else task.name.replace(":", "_").replace(os.sep, "_")
    model_label = task.model_name.replace(":", "_").replace(os.sep, "_")
    path = os.path.join(cache_dir(), f"teacher-r{RECIPE}-{label}-{model_label}-{task.fingerprint()}.pt")
    if _cached(path, log):
        return _load(task, path), path, 0.0
    if task.checkpoint:
        model = load_weights_(task.build(), task.checkpoint, task.model_name).eval()
        check_finite(model, task.checkpoint)
        _save_atomic(model.state_dict(), path)  # the plain state dict, whatever wrapper it came in
        log(f"teacher: the weights of {task.checkpoint} (not trained)")
        return model, path, 0.0
    recipe = dict(task.recipe)
    mixed = recipe.get("bf16") and (device != "cpu" or bf16_supported())
    log(
        f"training the teacher ({task.model_name} on {task.name}, {task.teacher_epochs} epochs, "
        f"{len(task.train)} images{', bf16 mixed precision' if mixed else ''}) ..."
    )
    t0 = time.perf_counter()
    progress = getattr(log, "progress", log)
    epochs = task.teacher_epochs
    check = task.val.x[:VAL_CHECK_IMAGES], task.val.y[:VAL_CHECK_IMAGES]

    def on_epoch(epoch: int, loss: float, model: nn.Module) -> None:
        elapsed = time.perf_counter() - t0
        acc = accuracy(model, *check)
        left = elapsed / epoch * (epochs - epoch)
        progress(
            f"teacher: epoch {epoch}/{epochs}, loss {loss:.3f}, validation accuracy {acc:.2%} "
            f"({len(check[1])} images), {_clock(elapsed)} elapsed, about {_clock(left)} left"
        )

    torch.manual_seed(task.seed)  # the initial weights too: the same task gives the same teacher
    model = train_classifier(
        task.build(), task.train, epochs=epochs, seed=task.seed, device=device, on_epoch=on_epoch, **recipe
    )
    seconds = time.perf_counter() - t0
    check_finite(model, "training")
    _save_atomic(model.state_dict(), path)
    return model, path, seconds


def ensure_teacher(
    study: optuna.Study,
    task: Task,
    artifact_store,
    *,
    device: str = "cpu",
    train: bool = True,
    log=print,
) -> nn.Module:
    """The study's teacher, fetching or (if ``train``) training and publishing it."""
    meta = study.user_attrs.get(TEACHER_ATTR)
    if meta:
        if meta.get("fingerprint") != task.fingerprint():
            raise UsageError(
                f"this machine's task {task.name}/{task.model_name} differs from the study's "
                f"(fingerprint {task.fingerprint()} vs {meta.get('fingerprint')}); refusing to join"
            )
        path = os.path.join(cache_dir(), f"teacher-{meta['sha256']}.pt")
        if os.path.exists(path) and sha256_file(path) != meta["sha256"]:  # checked on every load
            log(f"the cached teacher {path} does not match the study's SHA-256; fetching the study's again")
            os.remove(path)
        if not os.path.exists(path):
            tmp = path + f".{os.getpid()}.download"
            try:
                download_artifact(
                    artifact_store=artifact_store, file_path=tmp, artifact_id=meta["artifact_id"]
                )
            except Exception as e:  # noqa: BLE001
                raise UsageError(
                    f"cannot fetch the study's teacher (artifact {meta['artifact_id']}): {e}; "
                    "point --artifacts at the study's artifact store"
                ) from None
            if sha256_file(tmp) != meta["sha256"]:
                os.remove(tmp)
                raise UsageError("the study's teacher checkpoint is corrupt (SHA-256 mismatch)")
            os.replace(tmp, path)
        return _load(task, path)
    if not train:
        raise UsageError(
            f"study {study.study_name!r} has no teacher yet: its `tradeoff create` has not finished; run "
            "that `tradeoff create` (again, if it was interrupted: it resumes) before starting workers"
        )
    model, path, seconds = train_teacher(task, device=device, log=log)
    val_acc = accuracy(model, task.val.x, task.val.y)
    chance = at_chance(val_acc, task.val.y)
    if chance and task.checkpoint:  # get_task refused it before the study; a changed file since
        check_not_chance(val_acc, task.val.y, f"checkpoint {task.checkpoint}")
    if chance:  # trained here: said, and recorded with the teacher
        log(
            f"warning: the teacher tradeoff trained {chance}; train it longer (--teacher-epochs), give "
            "more data or a trained --checkpoint: the figures of its students will not mean much"
        )
    test_acc = accuracy(model, task.test.x, task.test.y)
    artifact_id = upload_artifact(artifact_store=artifact_store, file_path=path, study_or_trial=study)
    study.set_user_attr(
        TEACHER_ATTR,
        {
            "artifact_id": artifact_id,
            "sha256": sha256_file(path),
            "fingerprint": task.fingerprint(),
            "model": task.model_name,
            "train_seconds": round(seconds, 1),
            "source": f"checkpoint {task.checkpoint}" if task.checkpoint else "trained by tradeoff",
            "val_accuracy": val_acc,
            "test_accuracy": test_acc,
            **({"at_chance": chance} if chance else {}),
        },
    )
    how = f"trained in {seconds:.0f} s" if seconds else "from the local cache"
    log(f"teacher ready ({how}): validation accuracy {val_acc:.2%}, test accuracy {test_acc:.2%}")
    return model
