"""Tasks: the model to compress with its data, checked end to end before any trial.

A :class:`Task` joins the data's three splits (:mod:`tradeoff.search.data`) with a model
builder (:mod:`tradeoff.search.models`) and the settings that decide the teacher; its
fingerprint says whether two machines would train the same teacher.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from tradeoff.search.data import Split, data_fingerprint, load_data
from tradeoff.search.errors import UsageError
from tradeoff.search.models import (
    _architecture_hash,
    check_finite,
    check_not_chance,
    load_weights_,
    model_builder,
)
from tradeoff.storage.artifacts import sha256_file


@dataclass(frozen=True, eq=False)
class Task:
    """The model family to compress, its data splits and how to train it."""

    name: str
    model_name: str
    num_classes: int
    train: Split
    val: Split
    test: Split
    build: Callable[[], nn.Module]
    teacher_epochs: int
    seed: int
    checkpoint: str | None = None  # trained weights: the teacher, not trained here
    settings: dict = field(default_factory=dict)  # what else decides the data and the model
    classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what loading the data skipped, for the user

    @property
    def example_input(self) -> torch.Tensor:
        return self.val.x[:1].clone()

    def data_fingerprint(self) -> str:
        """A hash of the data alone (see :func:`tradeoff.search.data.data_fingerprint`)."""
        return data_fingerprint(self.name, self.seed, self.settings, (self.train, self.val, self.test))

    def fingerprint(self) -> str:
        """A hash of everything that decides the teacher: model (architecture and weights),
        data (listing and contents), splits and settings."""
        h = hashlib.sha256()
        data_id = self.settings.get("data_id", self.name)  # not a folder's path: it may differ per machine
        h.update(f"{data_id}|{self.model_name}|{self.num_classes}|{self.seed}|{self.teacher_epochs}".encode())
        for key in sorted(self.settings):
            h.update(f"|{key}={self.settings[key]}".encode())
        for split in (self.train, self.val, self.test):
            h.update(split.x.numpy().tobytes())
            h.update(split.y.numpy().tobytes())
        return h.hexdigest()[:16]


# resnet18 on digits: 30 epochs reach 99.2 % validation and 99.4 % test accuracy (15: 98.9 / 99.4)
DEFAULT_TEACHER_EPOCHS = {"resnet18": 30, "tiny_resnet": 8}


def default_teacher_epochs(model: str, n_train: int, *, batch_size: int = 64, min_steps: int = 300) -> int:
    """15 epochs, or more on a small training split so that training takes at least
    ``min_steps`` SGD steps (capped at 300 epochs); the registered models keep their own."""
    if model in DEFAULT_TEACHER_EPOCHS:
        return DEFAULT_TEACHER_EPOCHS[model]
    steps_per_epoch = max(1, -(-n_train // batch_size))
    return int(min(300, max(15, -(-min_steps // steps_per_epoch))))


def get_task(
    name: str,
    model: str,
    *,
    seed: int = 0,
    teacher_epochs: int | None = None,
    checkpoint: str | None = None,
    checkpoint_sha256: str | None = None,
    image_size: int | None = None,
    normalize: str = "data",
    log: Callable[[str], None] | None = None,
) -> Task:
    """The data ``name`` with the model ``model``, checked end to end before any trial: the data
    loads, the model builds, the checkpoint fits it, and its output has one score per class.
    UsageError names what is wrong."""
    data = load_data(name, seed=seed, image_size=image_size, normalize=normalize)
    train, val, test = data.train, data.val, data.test
    settings, classes, notes = dict(data.settings), data.classes, data.notes
    in_channels, size = train.x.shape[1], train.x.shape[-1]
    num_classes = int(max(int(s.y.max()) for s in (train, val, test))) + 1
    epochs = teacher_epochs if teacher_epochs is not None else default_teacher_epochs(model, len(train))
    build = model_builder(model, in_channels, size, num_classes)

    probe = build()
    if checkpoint:
        if os.path.isfile(checkpoint):
            sha = sha256_file(checkpoint)
            if checkpoint_sha256 and sha != checkpoint_sha256:
                raise UsageError(
                    f"checkpoint {checkpoint} has changed since the study was created (SHA-256 differs); "
                    "start a new study for new weights"
                )
            load_weights_(probe, checkpoint, model)
            check_finite(probe, checkpoint)
        elif checkpoint_sha256:  # a worker: the weights come from the study's teacher artifact
            sha = checkpoint_sha256
        else:
            raise UsageError(f"checkpoint {checkpoint} does not exist")
        settings["checkpoint_sha256"] = sha
    try:
        with torch.no_grad():
            out = probe.eval()(val.x[:2])
    except Exception as e:  # noqa: BLE001
        raise UsageError(
            f"model {model!r} does not run on the data's inputs (shape {tuple(val.x[:2].shape)}): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(val.x[:2]), num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(
            f"model {model!r} gives outputs of shape {shape} for a batch of 2, but the data has "
            f"{num_classes} classes: expected (2, {num_classes})"
        )
    settings["architecture"] = _architecture_hash(probe)  # after a forward: lazy layers have shapes
    if checkpoint and os.path.isfile(checkpoint):  # a teacher at chance would make every figure mislead
        from tradeoff.search.measure import accuracy

        check_not_chance(accuracy(probe, val.x, val.y), val.y, f"checkpoint {checkpoint}")
    if log:
        for note in notes:
            log(note)
    return Task(
        name,
        model,
        num_classes,
        train,
        val,
        test,
        build,
        epochs,
        seed,
        checkpoint=checkpoint,
        settings=settings,
        classes=classes,
        notes=notes,
    )


def task_for(config, *, log: Callable[[str], None] | None = None) -> Task:
    """The task a SearchConfig describes."""
    return get_task(
        config.task,
        config.model,
        seed=config.seed,
        teacher_epochs=config.teacher_epochs,
        checkpoint=config.checkpoint,
        checkpoint_sha256=config.checkpoint_sha256,
        image_size=config.image_size,
        normalize=config.normalize,
        log=log,
    )
