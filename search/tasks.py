"""Tasks: the model to compress and its data.

Data (``--data``): the bundled ``digits`` (scikit-learn's handwritten digits, 1,797 8x8 grey
images, 10 classes, shipped inside scikit-learn); an image folder laid out as torchvision's
``ImageFolder`` (one sub-folder per class, optionally inside ``train/``, ``val/``, ``test/``);
or a plug-in ``package.module:function`` returning the splits. Every task has three splits:
train (teacher training and fine-tuning) / validation (what the search optimises) / test
(reported on export only), cut with a fixed seed where the data does not bring them.

Models (``--model``): the registered ones below (``resnet18`` with a small-input stem,
``tiny_resnet`` for tests), any torchvision classification model by name (class count from
the data, first convolution fitted to the data's channels), or a plug-in
``package.module:function`` returning an ``nn.Module``; optionally with trained weights
(``--checkpoint``, loaded with ``weights_only=True``), which then are the teacher.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

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
    checkpoint: str | None = None  # trained weights: the teacher, not trained here
    settings: dict = field(default_factory=dict)  # what else decides the data and the model
    classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what loading the data skipped, for the user

    @property
    def example_input(self) -> torch.Tensor:
        return self.val.x[:1].clone()

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
DEFAULT_IMAGE_SIZE = 64
NORMALIZATIONS = ("data", "imagenet")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_teacher_epochs(model: str, n_train: int, *, batch_size: int = 64, min_steps: int = 300) -> int:
    """15 epochs, or more on a small training split so that training takes at least
    ``min_steps`` SGD steps (capped at 300 epochs); the registered models keep their own."""
    if model in DEFAULT_TEACHER_EPOCHS:
        return DEFAULT_TEACHER_EPOCHS[model]
    steps_per_epoch = max(1, -(-n_train // batch_size))
    return int(min(300, max(15, -(-min_steps // steps_per_epoch))))


def is_plugin(spec: str) -> bool:
    """``package.module:function`` (and not a path that exists)."""
    mod, sep, fn = spec.partition(":")
    return bool(sep and mod and fn.isidentifier() and not os.path.exists(spec))


def load_plugin(spec: str, what: str) -> Callable:
    """The function named by ``package.module:function``; the working directory is importable,
    as with ``python -m``."""
    module_name, _, fn_name = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the plug-in's
        raise UsageError(
            f"{what} plug-in {spec!r}: cannot import {module_name}: {type(e).__name__}: {e}"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UsageError(f"{what} plug-in {spec!r}: {module_name} has no function {fn_name!r}")
    return fn


def _call_with_accepted(fn: Callable, spec: str, what: str, **kwargs):
    """Call a plug-in with the keyword arguments its signature accepts."""
    try:
        params = inspect.signature(fn).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
    except (TypeError, ValueError):
        pass
    try:
        return fn(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{what} plug-in {spec!r} raised {type(e).__name__}: {e}") from None


def torchvision_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _fit_in_channels_(model: nn.Module, in_channels: int) -> nn.Module:
    """Give the first convolution ``in_channels`` inputs (torchvision models expect RGB)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.in_channels != in_channels:
                new = nn.Conv2d(
                    in_channels,
                    m.out_channels,
                    m.kernel_size,
                    m.stride,
                    m.padding,
                    m.dilation,
                    groups=1,
                    bias=m.bias is not None,
                    padding_mode=m.padding_mode,
                )
                parent, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, leaf, new)
            break
    return model


def model_builder(spec: str, in_channels: int, image_size: int, num_classes: int) -> Callable[[], nn.Module]:
    """A function that builds a fresh (untrained) model for ``spec``; UsageError if unknown."""
    if spec in MODELS:
        return lambda: MODELS[spec](in_channels, image_size, num_classes)
    if spec in torchvision_models():
        extra = {"aux_logits": False, "init_weights": True} if spec in ("googlenet", "inception_v3") else {}
        if spec.startswith("vit_"):
            extra["image_size"] = image_size

        def build_torchvision() -> nn.Module:
            model = torchvision.models.get_model(spec, weights=None, num_classes=num_classes, **extra)
            return _fit_in_channels_(model, in_channels)

        return build_torchvision
    if is_plugin(spec):
        fn = load_plugin(spec, "model")

        def build_plugin() -> nn.Module:
            model = _call_with_accepted(
                fn, spec, "model", num_classes=num_classes, in_channels=in_channels, image_size=image_size
            )
            if not isinstance(model, nn.Module):
                raise UsageError(
                    f"model plug-in {spec!r} returned {type(model).__name__}, expected a torch.nn.Module"
                )
            return model

        return build_plugin
    raise UsageError(
        f"unknown model {spec!r}: give a torchvision classification model (e.g. resnet18, mobilenet_v2, "
        f"efficientnet_b0), one of {', '.join(sorted(MODELS))}, or a plug-in package.module:function"
    )


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """A state dict from ``path``, loaded with ``weights_only=True`` (no code runs); a
    ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and DataParallel's ``module.``
    prefixes are unwrapped."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"checkpoint {path} does not load as weights only ({first[:200]}); save model.state_dict() "
            "with torch.save"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"checkpoint {path} holds no state dict of tensors; save model.state_dict()")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_weights_(model: nn.Module, path: str, model_name: str) -> nn.Module:
    state = read_checkpoint(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise UsageError(f"checkpoint {path} does not fit {model_name}: {detail[:300]}") from None
    return model


def sha256_file(path: str) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _architecture_hash(model: nn.Module) -> str:
    h = hashlib.sha256(repr(model).encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}".encode())
    return h.hexdigest()[:16]


def data_kind(spec: str) -> str:
    """``bundled``, ``plugin`` or ``folder``; UsageError names a spec that is none of them."""
    if spec in TASKS:
        return "bundled"
    if is_plugin(spec):
        return "plugin"
    if os.path.isdir(spec):
        return "folder"
    if os.path.exists(spec):
        raise UsageError(f"--data {spec}: not a directory; give an image folder (one sub-folder per class)")
    raise UsageError(
        f"--data {spec}: no such folder, and not a bundled task ({', '.join(sorted(TASKS))}) or a plug-in "
        "package.module:function"
    )


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
    from search.data import folder_splits, plugin_splits

    if normalize not in NORMALIZATIONS:
        raise UsageError(f"--normalize {normalize!r}: choose {' or '.join(NORMALIZATIONS)}")
    kind = data_kind(name)
    settings: dict = {}
    classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    if kind == "bundled":
        train, val, test = TASKS[name]()
        classes = tuple(str(c) for c in range(int(train.y.max()) + 1))
    elif kind == "plugin":
        train, val, test = plugin_splits(name)
        settings["data_plugin"] = name
    else:
        size = image_size or DEFAULT_IMAGE_SIZE
        loaded = folder_splits(name, image_size=size, normalize=normalize, seed=seed)
        train, val, test = loaded.splits
        classes, notes = loaded.classes, loaded.notes
        settings.update(listing=loaded.listing_hash, image_size=size, normalize=normalize, data_id="folder")
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
