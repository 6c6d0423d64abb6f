"""Tasks: the model to compress and its data.

The bundled task ``digits`` is scikit-learn's handwritten digits (1,797 8x8 grey images, 10
classes, shipped inside scikit-learn), split with a fixed seed into train (teacher training and
fine-tuning) / validation (what the search optimises) / test (reported on export only).
Models are torchvision architectures adapted to small inputs, plus tiny registered models that
keep the tests fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from torch import nn

from search.errors import UsageError


@dataclass(frozen=True, eq=False)
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


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

    @property
    def example_input(self) -> torch.Tensor:
        return self.val.x[:1].clone()

    def fingerprint(self) -> str:
        """A hash of everything that decides the teacher: model, data, splits and settings."""
        h = hashlib.sha256()
        h.update(
            f"{self.name}|{self.model_name}|{self.num_classes}|{self.seed}|{self.teacher_epochs}".encode()
        )
        for split in (self.train, self.val, self.test):
            h.update(split.x.numpy().tobytes())
            h.update(split.y.numpy().tobytes())
        return h.hexdigest()[:16]


# -- models ---------------------------------------------------------------------------------

MODELS: dict[str, Callable[[int, int, int], nn.Module]] = {}


def register_model(fn: Callable[[int, int, int], nn.Module]) -> Callable[[int, int, int], nn.Module]:
    """Register ``fn(in_channels, image_size, num_classes) -> nn.Module`` under its name."""
    MODELS[fn.__name__] = fn
    return fn


def _small_input_stem_(model: nn.Module, in_channels: int) -> nn.Module:
    """Adapt a torchvision ResNet to small images: a 3x3 stride-1 first conv and no max-pool
    (the CIFAR stem), so an 8x8 digit is not shrunk to 2x2 before the first block."""
    model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


@register_model
def resnet18(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    model = torchvision.models.resnet18(num_classes=num_classes)
    if image_size <= 64 or in_channels != 3:
        _small_input_stem_(model, in_channels)
    return model


@register_model
def tiny_resnet(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """A torchvision ResNet with one BasicBlock per stage and 16-128 channels: for tests."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    widths = [16, 32, 64, 128]
    # Rebuild the stages at the narrow widths (torchvision's BasicBlock has no width knob).
    model.inplanes = 16
    model.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
    model.bn1 = nn.BatchNorm2d(16)
    model.maxpool = nn.Identity()
    model.layer1 = model._make_layer(BasicBlock, widths[0], 1)
    model.layer2 = model._make_layer(BasicBlock, widths[1], 1, stride=2)
    model.layer3 = model._make_layer(BasicBlock, widths[2], 1, stride=2)
    model.layer4 = model._make_layer(BasicBlock, widths[3], 1, stride=2)
    model.fc = nn.Linear(widths[3], num_classes)
    return model


# -- data -----------------------------------------------------------------------------------


def _split_indices(y: np.ndarray, seed: int, fractions=(0.6, 0.2, 0.2)) -> tuple[np.ndarray, ...]:
    """A stratified split with a fixed seed: every class in the same proportion in each part."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a = int(round(fractions[0] * len(idx)))
        b = a + int(round(fractions[1] * len(idx)))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.extend(chunk.tolist())
    return tuple(np.sort(np.array(p)) for p in parts)


DIGITS_SPLIT_SEED = 0


def digits_splits() -> tuple[Split, Split, Split]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    tr, va, te = _split_indices(d.target, DIGITS_SPLIT_SEED)
    mean, std = x[tr].mean(), x[tr].std()  # normalisation from the training split only
    x = (x - mean) / std
    return tuple(Split(x[i], y[i]) for i in (tr, va, te))  # type: ignore[return-value]


TASKS: dict[str, Callable[[], tuple[Split, Split, Split]]] = {"digits": digits_splits}

DEFAULT_TEACHER_EPOCHS = {"resnet18": 15, "tiny_resnet": 8}


def get_task(name: str, model: str, *, seed: int = 0, teacher_epochs: int | None = None) -> Task:
    """The task ``name`` with the model ``model``; UsageError names what is unknown."""
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    if model not in MODELS:
        raise UsageError(f"unknown model {model!r}; available: {', '.join(sorted(MODELS))}")
    train, val, test = TASKS[name]()
    in_channels, image_size = train.x.shape[1], train.x.shape[-1]
    num_classes = int(train.y.max()) + 1
    epochs = teacher_epochs if teacher_epochs is not None else DEFAULT_TEACHER_EPOCHS.get(model, 15)

    def build() -> nn.Module:
        return MODELS[model](in_channels, image_size, num_classes)

    return Task(name, model, num_classes, train, val, test, build, epochs, seed)
