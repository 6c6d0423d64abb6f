"""Tasks: the model to compress with its data, checked end to end before any trial.

A :class:`Task` joins the data's three splits (:mod:`tradeoff.search.task.data`) with a model
builder (:mod:`tradeoff.search.task.models`) and the settings that decide the teacher; its
fingerprint says whether two machines would train the same teacher.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tradeoff.search.errors import UsageError
from tradeoff.search.task.data import Split, data_fingerprint, load_data
from tradeoff.search.task.models import (
    architecture_hash,
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
    recipe: dict = field(default_factory=dict)  # how the teacher trains: train_classifier's options
    finetune_images: int = 0  # trials fine-tune on this many training images (0: all of them)

    @property
    def example_input(self) -> torch.Tensor:
        return self.val.x[:1].clone()

    @property
    def finetune(self) -> Split:
        """What trials fine-tune and distil on: the training split, or a fixed sample of it
        (stratified, the task's seed) where the task sizes trials to a budget; the teacher's
        logits are computed on it once per worker."""
        n = self.finetune_images
        if not n or n >= len(self.train):
            return self.train
        cached = self.__dict__.get("_finetune")
        if cached is None:
            y = self.train.y.numpy()
            fraction = n / len(y)
            rng = np.random.default_rng(self.seed)
            idx = np.concatenate(
                [
                    rng.permutation(np.flatnonzero(y == c))[: max(1, int(round(fraction * (y == c).sum())))]
                    for c in np.unique(y)
                ]
            )
            idx = torch.from_numpy(np.sort(idx))
            cached = Split(self.train.x[idx], self.train.y[idx])
            object.__setattr__(self, "_finetune", cached)
        return cached

    def data_fingerprint(self) -> str:
        """A hash of the data alone (see :func:`tradeoff.search.task.data.data_fingerprint`)."""
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

# What a bundled task is sized for, beyond its data: the stem of the registered models, the
# teacher's recipe (train_classifier's options and epochs per model) and the fine-tuning sample
# of a trial. Stored in the task's settings, so a change trains a new teacher. digits has none:
# its teacher is the one every earlier study trained.
TASK_PROFILES: dict[str, dict] = {
    # Fashion-MNIST on 2 CPU cores (BENCHMARKS.md, "Fashion-MNIST"): the pooled stem (3x3 stride-1
    # conv, 2x2 max-pool) puts a 28 px image into the first block at 14x14 (4x cheaper than the
    # CIFAR stem, about 3.2 min an epoch in bf16; 0.47 points above the 7x7 stride-2 stem on the
    # held-out images at the same cost); batch 128, one-cycle to 0.1, a shift of up to 2 px and a
    # horizontal flip (clothes are left-right symmetric; Zalando's table lists its augmented
    # ResNet18 at 94.9 %); 12 epochs (93.72 % test; 10 gave 93.39 and 93.56 %): 20-36 min on
    # 2 cores, inside the 40 the task is sized for.
    "fashion-mnist": {
        "stem": "pooled",
        "teacher": {"batch_size": 128, "max_lr": 0.1, "shift": 2, "flip": True, "bf16": True},
        "teacher_epochs": {"resnet18": 12, "tiny_resnet": 4},
        "finetune_images": 10_000,
    },
}


def default_teacher_epochs(
    model: str, n_train: int, *, batch_size: int = 64, min_steps: int = 300, task: str = ""
) -> int:
    """The task's own count for the model where it sizes one; else 15 epochs, or more on a
    small training split so that training takes at least ``min_steps`` SGD steps (capped at
    300 epochs); the registered models keep their own."""
    per_task = TASK_PROFILES.get(task, {}).get("teacher_epochs", {})
    if model in per_task:
        return per_task[model]
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
    data_root: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Task:
    """The data ``name`` with the model ``model``, checked end to end before any trial: the data
    loads, the model builds, the checkpoint fits it, and its output has one score per class.
    UsageError names what is wrong."""
    data = load_data(name, seed=seed, image_size=image_size, normalize=normalize, data_root=data_root)
    train, val, test = data.train, data.val, data.test
    settings, classes, notes = dict(data.settings), data.classes, data.notes
    in_channels, size = train.x.shape[1], train.x.shape[-1]
    num_classes = int(max(int(s.y.max()) for s in (train, val, test))) + 1
    epochs = (
        teacher_epochs if teacher_epochs is not None else default_teacher_epochs(model, len(train), task=name)
    )
    profile = TASK_PROFILES.get(name, {})
    recipe = dict(profile.get("teacher", {}))
    if profile:
        # what decides the teacher (the fine-tuning sample does not: it is not in the fingerprint)
        settings.update(
            stem=profile["stem"], teacher_recipe=",".join(f"{k}={v}" for k, v in sorted(recipe.items()))
        )
    build = model_builder(model, in_channels, size, num_classes, stem=profile.get("stem"))

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
    settings["architecture"] = architecture_hash(probe)  # after a forward: lazy layers have shapes
    if checkpoint and os.path.isfile(checkpoint):  # a teacher at chance would make every figure mislead
        from tradeoff.search.trial.measure import accuracy

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
        recipe=recipe,
        finetune_images=int(profile.get("finetune_images", 0)),
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
        data_root=config.data_root,
        log=log,
    )
