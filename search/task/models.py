"""Models: the registered ones, torchvision's by name, plug-ins, and trained weights.

``--model`` takes the registered models below (``resnet18`` with a small-input stem,
``tiny_resnet`` for tests), any torchvision classification model by name (class count from
the data, first convolution fitted to the data's channels), or a plug-in
``package.module:function`` returning an ``nn.Module``; optionally with trained weights
(``--checkpoint``, loaded with ``weights_only=True``), which then are the teacher.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import torch
from torch import nn

from tradeoff.search.errors import UsageError
from tradeoff.search.plugins import call_with_accepted, is_plugin, load_plugin

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


def _strided_stem_(model: nn.Module, in_channels: int) -> nn.Module:
    """Adapt a torchvision ResNet to 28-64 px images on a CPU budget: its own 7x7 stride-2 first
    conv (fitted to the channels) and no max-pool, so a 28x28 image enters the first block at
    14x14 (the ImageNet stem would make it 7x7; the CIFAR stem keeps 28x28 at 4x the cost)."""
    model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 7, 2, 3, bias=False)
    model.maxpool = nn.Identity()
    return model


def _pooled_stem_(model: nn.Module, in_channels: int) -> nn.Module:
    """Adapt a torchvision ResNet to 28-64 px images on a CPU budget, keeping detail: a 3x3
    stride-1 first conv at full resolution, then a 2x2 max-pool, so a 28x28 image enters the
    first block at 14x14 as with the strided stem (the same blocks, the same cost per epoch) but
    from features that saw every pixel. On Fashion-MNIST it trains a 0.47-point better teacher
    than the strided stem with the same recipe (BENCHMARKS.md, "Fashion-MNIST")."""
    model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.MaxPool2d(2)
    return model


STEMS = ("auto", "small", "strided", "pooled")


@register_model
def resnet18(in_channels: int, image_size: int, num_classes: int, stem: str = "auto") -> nn.Module:
    """torchvision's resnet18 with a stem for the input: ``small`` (3x3 stride 1, no max-pool),
    ``strided`` (7x7 stride 2, no max-pool), ``pooled`` (3x3 stride 1, 2x2 max-pool), or
    ``auto``: small below 64 px or for grey images, ImageNet's own otherwise. A task may name
    the stem it is sized for (fashion-mnist: pooled)."""
    import torchvision  # here, not at import: torchvision costs a second that `front` has no use for

    model = torchvision.models.resnet18(num_classes=num_classes)
    if stem not in STEMS:
        raise UsageError(f"unknown stem {stem!r}: choose one of {', '.join(STEMS)}")
    if stem == "strided":
        _strided_stem_(model, in_channels)
    elif stem == "pooled":
        _pooled_stem_(model, in_channels)
    elif stem == "small" or (stem == "auto" and (image_size <= 64 or in_channels != 3)):
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


def torchvision_models() -> list[str]:
    import torchvision

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
                model.set_submodule(name, new)
            break
    return model


def model_builder(
    spec: str, in_channels: int, image_size: int, num_classes: int, *, stem: str | None = None
) -> Callable[[], nn.Module]:
    """A function that builds a fresh (untrained) model for ``spec``; UsageError if unknown.
    ``stem``: the input stem a task asks of a registered model that has one (resnet18)."""
    if spec in MODELS:
        import inspect

        extra = {"stem": stem} if stem and "stem" in inspect.signature(MODELS[spec]).parameters else {}
        return lambda: MODELS[spec](in_channels, image_size, num_classes, **extra)
    if spec in torchvision_models():
        extra = {"aux_logits": False, "init_weights": True} if spec in ("googlenet", "inception_v3") else {}
        if spec.startswith("vit_"):
            extra["image_size"] = image_size

        def build_torchvision() -> nn.Module:
            import torchvision

            model = torchvision.models.get_model(spec, weights=None, num_classes=num_classes, **extra)
            return _fit_in_channels_(model, in_channels)

        return build_torchvision
    if is_plugin(spec):
        fn = load_plugin(spec, "model")

        def build_plugin() -> nn.Module:
            model = call_with_accepted(
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


def check_finite(model: nn.Module, source: str) -> None:
    """Refuse weights that hold NaN or infinity (a diverged or damaged checkpoint)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UsageError(
                f"the teacher weights from {source} hold NaN or infinite values (first in {name}); "
                "give a checkpoint of a trained model"
            )


def at_chance(val_accuracy: float, labels) -> str | None:
    """``scores 10.0% on the validation split, which is chance (...)`` when a teacher is no better
    than always answering the split's most common class (by two standard errors), else None."""
    counts = torch.bincount(torch.as_tensor(labels).long().flatten())
    n = int(counts.sum())
    chance = float(counts.max()) / max(1, n)
    margin = 2 * (chance * (1 - chance) / max(1, n)) ** 0.5
    if val_accuracy > chance + margin:
        return None
    return (
        f"scores {val_accuracy:.1%} on the validation split, which is chance ({chance:.1%} by always "
        "answering the most common class)"
    )


def check_not_chance(val_accuracy: float, labels, source: str) -> None:
    """Refuse given weights at chance (:func:`at_chance`): its students would learn nothing, and
    every figure would mislead."""
    problem = at_chance(val_accuracy, labels)
    if problem:
        raise UsageError(
            f"the teacher from {source} {problem}: give a checkpoint trained for this task, or let "
            "tradeoff train one (no --checkpoint)"
        )


def architecture_hash(model: nn.Module) -> str:
    h = hashlib.sha256(repr(model).encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}".encode())
    return h.hexdigest()[:16]
