"""Pruning: structural channel pruning with torch-pruning, or unstructured magnitude pruning.

Structural (the default ``prune_mode``). What to remove: filters ranked by the L2 norm of the
whole coupled group (torch-pruning's ``GroupMagnitudeImportance``), so a residual add, a concat
or a depthwise conv prunes the same channels on every layer it couples. How: torch-pruning's
dependency-graph surgery. Channel counts are rounded to multiples of 8, which keeps
oneDNN/fbgemm CPU kernels on their vectorised paths. The classifier keeps all its outputs.

Unstructured: the globally smallest-magnitude weights of every conv and linear layer are set
to zero (``torch.nn.utils.prune``); the mask holds through fine-tuning, and the model is then
counted by its non-zeros and a sparse encoding (see ``search.trial.measure``).
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

from tradeoff.spaces._base import (
    Applied,
    ApplyContext,
    Knob,
    KnobConfig,
    LayerGroup,
    Option,
    PlanError,
    ProbeContext,
    register_knob,
    skip_note,
    unknown_groups,
    value_for,
)

ROUND_TO = 8
MODES = ("structured", "unstructured")


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The layer whose outputs are the class scores: never pruned."""
    out = [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == num_classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
    ]
    return out[-1:] if out else []


def unprunable(model: nn.Module) -> list[nn.Module]:
    """Modules torch-pruning's graph cannot cut through: left whole."""
    return [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]


def tp_prune_(
    module: nn.Module,
    inputs,
    ratio: float | Mapping[str, float],
    importance: tp.importance.Importance,
    ignored: list[nn.Module],
    names: Mapping[nn.Module, str] | None = None,
) -> None:
    """torch-pruning's pruner at one ``ratio``, or per layer: a group is pruned at the ratio of
    its root layer (``value_for`` its module name in ``names``; ``*`` or 0 for the rest)."""
    per_layer = None
    if isinstance(ratio, Mapping):
        names = names or {m: n for n, m in module.named_modules()}
        per_layer = {
            m: float(value_for(ratio, names.get(m, ""), 0.0))
            for m in module.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m in names
        }
    pruner = tp.pruner.BasePruner(
        module,
        inputs,
        importance=importance,
        pruning_ratio=float(ratio.get("*", 0.0)) if per_layer is not None else ratio,
        pruning_ratio_dict=per_layer,
        ignored_layers=ignored,
        round_to=ROUND_TO,
    )
    pruner.step()


@dataclass(frozen=True)
class ChannelGroup:
    """One coupled channel group of torch-pruning's dependency graph: its ``root`` layer (the
    group's key in a per-layer ``prune_ratio``), the conv/linear ``layers`` whose channels it
    couples (output or input channels), of them the ``outputs`` whose output channels it sets,
    and the parameters of ``layers``."""

    root: str
    layers: tuple[str, ...]
    outputs: tuple[str, ...]
    params: int


def channel_groups(model: nn.Module, example_input, num_classes: int) -> list[ChannelGroup]:
    """The coupled channel groups structural pruning removes channels from (the classifier is
    not a group), in the order torch-pruning lists them."""
    names = {m: n for n, m in model.named_modules()}
    ignored = classifier_layers(model, num_classes) + unprunable(model)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    out = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        root = group[0][0].target.module
        layers: list[str] = []
        outputs: list[str] = []
        for dep, _ in group:
            m = dep.target.module
            if isinstance(m, (nn.Conv2d, nn.Linear)) and names.get(m):
                if names[m] not in layers:
                    layers.append(names[m])
                if graph.is_out_channel_pruning_fn(dep.handler) and names[m] not in outputs:
                    outputs.append(names[m])
        if names.get(root):
            params = sum(model.get_submodule(n).weight.numel() for n in layers)
            out.append(ChannelGroup(names[root], tuple(layers), tuple(outputs), int(params)))
    return out


def prune_groups(model: nn.Module, example_input, num_classes: int) -> list[tuple[str, list[str], int]]:
    """The coupled channel groups structural pruning removes channels from: (root layer, the
    conv/linear layers whose channels it couples, parameters of those layers). The root layer's
    name is the group's key in a per-layer ``prune_ratio``. The classifier is not a group."""
    return [(g.root, list(g.layers), g.params) for g in channel_groups(model, example_input, num_classes)]


def prune_channels_(
    model: nn.Module,
    ratio: float | Mapping[str, float],
    ctx: ApplyContext,
    skipped: list[str],
    *,
    importance: tp.importance.Importance | None = None,
    knob: str = "pruning",
) -> nn.Module:
    """Remove ``ratio`` of the output channels of every prunable group (per layer: each group
    at its root layer's ratio, see :func:`prune_groups`).

    torch-pruning traces the whole model once. Where its graph cannot follow an operation (a
    functional reshape such as ShuffleNet's ``channel_shuffle``), the model is pruned block by
    block instead (:func:`_prune_blockwise`), and the blocks it cannot handle are listed in
    ``skipped``. Returns the pruned model (a new object when the fallback was taken)."""
    importance = importance or tp.importance.GroupMagnitudeImportance(p=2)
    ignored = classifier_layers(model, ctx.num_classes) + unprunable(model)
    backup = copy.deepcopy(model)
    names = {m: n for n, m in model.named_modules()}
    try:
        tp_prune_(model, ctx.example_input, ratio, importance, ignored, names)
    except Exception as e:  # noqa: BLE001 - torch-pruning raises bare errors for unsupported graphs
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        model = _prune_blockwise(backup, ratio, ctx, skipped, importance, reason, knob)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and 0 in m.weight.shape:
            raise PlanError(f"pruning left layer {name} with no channels")
    return model


def _prune_blockwise(
    model: nn.Module,
    ratio: float,
    ctx: ApplyContext,
    skipped: list[str],
    importance,
    whole_graph_error: str,
    knob: str,
) -> nn.Module:
    """Prune each block on its own, keeping its input and output channels, so that nothing
    outside it changes: the largest blocks whose graph torch-pruning can trace, found top-down.
    A block whose output shape would change, or that cannot be traced and holds nothing
    traceable, is left whole and listed."""
    inputs: dict[nn.Module, tuple] = {}
    order: list[nn.Module] = []

    def record(mod, args):
        inputs.setdefault(mod, args)
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod not in order:
            order.append(mod)

    handles = [m.register_forward_pre_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model.eval()(ctx.example_input)
    finally:
        for h in handles:
            h.remove()
    keep = set(classifier_layers(model, ctx.num_classes)) | set(unprunable(model))
    names_of = {m: n for n, m in model.named_modules()}
    pruned = 0

    def visit(name: str, block: nn.Module) -> None:
        nonlocal pruned
        layers = [m for m in order if any(m is b for b in block.modules())]
        if len(layers) < 2:
            return
        args = inputs.get(block)
        if args is not None and block is not model and all(isinstance(a, torch.Tensor) for a in args):
            trial = copy.deepcopy(block)  # pruned on a copy: a failure leaves the block as it was
            index = {id(b): t for b, t in zip(block.modules(), trial.modules())}
            with torch.no_grad():
                shape = block(*args).shape
            try:
                # the block's last layer keeps its outputs: the block's output channels hold
                last = [index[id(layers[-1])], *(index[id(m)] for m in layers if m in keep)]
                trial_names = {index[id(m)]: n for m, n in names_of.items() if id(m) in index}
                tp_prune_(trial, args, ratio, importance, last, trial_names)
                with torch.no_grad():
                    changed = trial(*args).shape != shape
                if changed:
                    raise ValueError("the block's output shape changed")
            except Exception:  # noqa: BLE001 - try its children instead
                pass
            else:
                model.set_submodule(name, trial)
                pruned += 1
                return
        children = list(block.named_children())
        if not children:
            skipped.append(skip_note(knob, name, "torch-pruning cannot trace it"))
            return
        for child_name, child in children:
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)
    skipped.append(
        skip_note(
            knob,
            "(whole model)",
            f"pruned block by block: torch-pruning's graph failed ({whole_graph_error})",
        )
    )
    if not pruned:
        raise PlanError(f"structural pruning at ratio {_ratio_text(ratio)} failed: {whole_graph_error}")
    return model


def _ratio_text(ratio) -> str:
    if isinstance(ratio, Mapping):
        return f"{min(ratio.values()):g}-{max(ratio.values()):g} per layer"
    return f"{ratio:g}"


def magnitude_probe_(model: nn.Module, ratios: Mapping[str, float], ctx: ProbeContext) -> nn.Module:
    """``model`` with the channels of least L2 norm of each named group removed at its ratio, the
    trained weights kept (the sensitivity pass's probes of pruning and of the student's stages)."""
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    ignored = classifier_layers(model, ctx.num_classes) + unprunable(model)
    tp_prune_(model, ctx.example_input[:1], ratios, importance, ignored)
    return model


def check_channels_left(model: nn.Module, setting: str) -> None:
    """PlanError naming the first conv/linear layer of ``model`` left with no channel."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and 0 in m.weight.shape:
            raise PlanError(f"at {setting} layer {name} keeps no channel")


def prunable_weights(model: nn.Module, num_classes: int) -> list[tuple[str, nn.Module]]:
    keep = {id(m) for m in classifier_layers(model, num_classes)}
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in keep
    ]


def prune_weights_(model: nn.Module, ratio: float | Mapping[str, float], ctx: ApplyContext) -> nn.Module:
    """Zero the ``ratio`` smallest-magnitude weights over all conv/linear layers (global L1; per
    layer: each layer's own smallest, at its group's ratio).
    The mask stays attached (``weight_orig`` * ``weight_mask``) until :func:`make_permanent_`."""
    layers = prunable_weights(model, ctx.num_classes)
    if not layers:
        raise PlanError("unstructured pruning found no conv or linear layer to prune")
    if isinstance(ratio, Mapping):
        for name, m in layers:
            amount = float(value_for(ratio, name, 0.0))
            if amount > 0:
                torch_prune.l1_unstructured(m, "weight", amount=amount)
        return model
    torch_prune.global_unstructured(
        [(m, "weight") for _, m in layers], pruning_method=torch_prune.L1Unstructured, amount=ratio
    )
    return model


def make_permanent_(model: nn.Module) -> nn.Module:
    """Fold any pruning mask into its weight (after fine-tuning, before quantization)."""
    for m in model.modules():
        if torch_prune.is_pruned(m) and hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")
    return model


@dataclass(frozen=True)
class PruneConfig(KnobConfig):
    """``value``: the fraction of channels (``mode="structured"``) or of weights
    (``"unstructured"``) removed; one number or a mapping from layer group (a coupled group's
    root layer, see :func:`prune_groups`) to number."""

    value: float | Mapping[str, float] = 0.0
    mode: str = "structured"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PlanError(f"unknown prune mode {self.mode!r}; use one of {', '.join(MODES)}")


@register_knob
class PruneRatio(Knob):
    name = "prune_ratio"
    config = PruneConfig
    off = 0.0
    order = 20
    structural = True
    per_layer = True
    limits = (0.0, 0.95)
    default_space = {"low": 0.0, "high": 0.8, "step": 0.05}
    probe_value = 0.5
    help = "fraction of channels (or, with --prune-mode unstructured, of weights) removed"
    options = {
        "mode": Option(
            "--prune-mode",
            MODES,
            "structured: remove whole channels (default); unstructured: zero single weights (params then "
            "counts non-zeros and size_bytes a sparse encoding)",
        )
    }

    def apply(self, model: nn.Module, config: PruneConfig, ctx: ApplyContext) -> Applied:
        unknown_groups(self.name, config.value, model)
        ratio = dict(config.value) if isinstance(config.value, Mapping) else float(config.value)
        if config.mode == "unstructured":
            return Applied(prune_weights_(model, ratio, ctx), facts={"sparse": True})
        skipped: list[str] = []
        model = prune_channels_(model, ratio, ctx, skipped)
        return Applied(model, skipped=tuple(skipped))

    def finalize_(self, model: nn.Module) -> nn.Module:
        return make_permanent_(model)

    # -- per-layer search: each coupled channel group alone, by the surgery plans use -------------

    title = "pruned at ratio"
    compresses_upward = True
    sensitivity_points = (0.25, 0.5, 0.75)

    def layer_groups(self, model: nn.Module, ctx: ProbeContext) -> tuple[list[LayerGroup], list[str]]:
        try:
            groups = prune_groups(model, ctx.example_input[:1], ctx.num_classes)
        except Exception as e:  # noqa: BLE001 - torch-pruning cannot trace this model whole
            return [], [skip_note(self.name, "*", f"torch-pruning's graph failed ({type(e).__name__})")]
        return [LayerGroup(root, tuple(layers), params) for root, layers, params in groups], []

    def probe_(self, model: nn.Module, values: Mapping[str, float], ctx: ProbeContext) -> nn.Module:
        return magnitude_probe_(model, dict(values), ctx)

    @contextlib.contextmanager
    def probed(
        self, model: nn.Module, group: LayerGroup, value: float, ctx: ProbeContext
    ) -> Iterator[tuple[nn.Module, float]]:
        pruned = self.probe_(copy.deepcopy(model), {group.name: value}, ctx)
        check_channels_left(pruned, f"{value:g}")
        # channels round to multiples of 8: the fraction the root layer actually lost
        before = model.get_submodule(group.name).weight.shape[0]
        yield pruned, round(1 - pruned.get_submodule(group.name).weight.shape[0] / before, 4)

    def combination_size(self, rng: random.Random, groups: int) -> int:
        return min(groups, rng.randint(0, 3))  # a few: one channel group couples many layers
