"""Low-rank decomposition: truncated SVD of linear layers and spatial SVD of convolutions.

A Linear(in, out) becomes Linear(in, k, no bias) -> Linear(k, out): k(in + out) + out
parameters instead of in*out + out. A kh x kw Conv2d(C, O) becomes a kh x 1 conv to k channels
followed by a 1 x kw conv to O channels (Jaderberg et al., 2014, scheme 2, computed in closed
form by an SVD of the kernel reshaped to (C*kh, O*kw)); a 1x1 conv is factored like a linear
layer. The rank is ceil(ratio * full rank) rounded up to a multiple of 8; a layer where that
would not save parameters is left alone and listed. Grouped and depthwise convolutions are
skipped (their per-group kernels are already thin).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from tradeoff.spaces._base import (
    Applied,
    ApplyContext,
    Knob,
    KnobConfig,
    LayerGroup,
    PlanError,
    ProbeContext,
    Unmeasured,
    register_knob,
    skip_note,
    unknown_groups,
    value_for,
)

ROUND_TO = 8


def target_rank(ratio: float, full: int) -> int:
    k = math.ceil(ratio * full)
    return min(full, ROUND_TO * math.ceil(k / ROUND_TO))


def _split(s: torch.Tensor, u: torch.Tensor, vh: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    root = s[:k].sqrt()
    return u[:, :k] * root, root[:, None] * vh[:k]


@torch.no_grad()
def layer_svd(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The SVD a factorization of ``m`` truncates (computed once, any rank cut from it)."""
    w = m.weight.detach().float()  # float32 SVD: 5x faster than float64, ample here
    if isinstance(m, nn.Linear):
        return torch.linalg.svd(w, full_matrices=False)
    o, c, kh, kw = w.shape
    if kh == 1 and kw == 1:
        return torch.linalg.svd(w.reshape(o, c), full_matrices=False)
    # M[(c, i), (o, j)] = W[o, c, i, j]  ->  V[k, c, i] H[o, k, j]
    return torch.linalg.svd(w.permute(1, 2, 0, 3).reshape(c * kh, o * kw), full_matrices=False)


@torch.no_grad()
def factor_linear(layer: nn.Linear, k: int, svd=None) -> nn.Sequential:
    u, s, vh = svd if svd is not None else layer_svd(layer)
    a, b = _split(s, u, vh, k)  # a: (out, k), b: (k, in)
    first = nn.Linear(layer.in_features, k, bias=False)
    second = nn.Linear(k, layer.out_features, bias=layer.bias is not None)
    first.weight.copy_(b.to(layer.weight.dtype))
    second.weight.copy_(a.to(layer.weight.dtype))
    if layer.bias is not None:
        second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


@torch.no_grad()
def factor_conv(conv: nn.Conv2d, k: int, svd=None) -> nn.Sequential:
    o, c, kh, kw = conv.weight.shape
    u, s, vh = svd if svd is not None else layer_svd(conv)
    if kh == 1 and kw == 1:
        a, b = _split(s, u, vh, k)  # a: (o, k), b: (k, c)
        first = nn.Conv2d(c, k, 1, stride=conv.stride, padding=conv.padding, bias=False)
        second = nn.Conv2d(k, o, 1, bias=conv.bias is not None)
        first.weight.copy_(b.reshape(k, c, 1, 1).to(conv.weight.dtype))
        second.weight.copy_(a.reshape(o, k, 1, 1).to(conv.weight.dtype))
    else:
        a, b = _split(s, u, vh, k)  # a: (c*kh, k), b: (k, o*kw)
        sh, sw = conv.stride
        ph, pw = conv.padding if isinstance(conv.padding, tuple) else (conv.padding, conv.padding)
        dh, dw = conv.dilation
        first = nn.Conv2d(c, k, (kh, 1), stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), bias=False)
        second = nn.Conv2d(
            k, o, (1, kw), stride=(1, sw), padding=(0, pw), dilation=(1, dw), bias=conv.bias is not None
        )
        first.weight.copy_(a.reshape(c, kh, k).permute(2, 0, 1).reshape(k, c, kh, 1).to(conv.weight.dtype))
        second.weight.copy_(b.reshape(k, o, kw).permute(1, 0, 2).reshape(o, k, 1, kw).to(conv.weight.dtype))
    if conv.bias is not None:
        second.bias.copy_(conv.bias)
    return nn.Sequential(first, second)


def full_rank(m: nn.Module) -> int:
    """The rank of ``m``'s weight as it is factored (a conv's kernel reshaped to (C*kh, O*kw))."""
    if isinstance(m, nn.Linear):
        return min(m.in_features, m.out_features)
    o, c, kh, kw = m.weight.shape
    return min(c * kh, o * kw)


def unfactorable(m: nn.Module) -> str:
    """Why ``m`` (a conv or linear layer) cannot be factored at any rank; "" when it can."""
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            return "grouped or depthwise convolution"
        if isinstance(m.padding, str):
            return f"padding={m.padding!r}"
    return ""


def plan_layer(name: str, m: nn.Module, ratio: float) -> tuple[int | None, str]:
    """(rank, "") to factor this layer, or (None, reason) to skip it."""
    reason = unfactorable(m)
    if reason:
        return None, reason
    if isinstance(m, nn.Linear):
        dense, per_rank = m.in_features * m.out_features, m.in_features + m.out_features
    else:
        o, c, kh, kw = m.weight.shape
        dense, per_rank = o * c * kh * kw, c * kh + o * kw
    full = full_rank(m)
    k = target_rank(ratio, full)
    if k * per_rank >= dense:
        return None, f"rank {k} of {full} saves no parameters"
    return k, ""


def factorize_(
    model: nn.Module, ratio: float | Mapping[str, float], ctx: ApplyContext, skipped: list[str]
) -> nn.Module:
    """Replace every linear and 2-D conv layer by its rank-``ratio`` factorization, in place.
    ``ratio`` may be per layer group (see ``value_for``); a layer whose ratio is 1 is kept."""
    ratios = ratio.values() if isinstance(ratio, Mapping) else [ratio]
    if not all(0 < r <= 1 for r in ratios):
        raise PlanError(f"rank_ratio={ratio} leaves no rank")
    if ctx.facts.sparse:
        skipped.append(
            skip_note("low_rank", "*", "weights are sparse (unstructured pruning): factors would be dense")
        )
        return model
    targets = [(n, m) for n, m in model.named_modules() if n and isinstance(m, (nn.Linear, nn.Conv2d))]
    for name, m in targets:
        layer_ratio = value_for(ratio, name, 1.0)
        if layer_ratio >= 1:
            continue  # this layer's group keeps its full rank
        k, reason = plan_layer(name, m, layer_ratio)
        if k is None:
            skipped.append(skip_note("low_rank", name, reason))
            continue
        new = factor_linear(m, k) if isinstance(m, nn.Linear) else factor_conv(m, k)
        model.set_submodule(name, new)
    return model


@dataclass(frozen=True)
class RankConfig(KnobConfig):
    """``value``: the rank kept as a fraction of each layer's full rank (1 = off), one number or
    a mapping from layer group to number."""

    value: float | Mapping[str, float] = 1.0


@register_knob
class RankRatio(Knob):
    name = "rank_ratio"
    config = RankConfig
    per_layer = True
    off = 1.0
    order = 30
    structural = True
    limits = (0.01, 1.0)
    default_space = {"low": 0.1, "high": 1.0, "step": 0.05}
    probe_value = 0.25
    help = "rank kept by low-rank factorization of linear and conv layers, as a fraction of full rank"
    # per-layer search: each factorable layer alone at half, a quarter and an eighth of its rank
    title = "low-rank at rank ratio"
    sensitivity_points = (0.5, 0.25, 0.125)

    def apply(self, model: nn.Module, config: RankConfig, ctx: ApplyContext) -> Applied:
        skipped: list[str] = []
        unknown_groups(self.name, config.value, model)
        ratio = config.value if isinstance(config.value, Mapping) else float(config.value)
        return Applied(factorize_(model, ratio, ctx, skipped), skipped=tuple(skipped))

    # -- per-layer search -------------------------------------------------------------------

    def layer_groups(self, model: nn.Module, ctx: ProbeContext) -> tuple[list[LayerGroup], list[str]]:
        groups, notes = [], []
        for n, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                reason = unfactorable(m)
                if reason:
                    notes.append(skip_note(self.name, n, reason))
                else:
                    groups.append(LayerGroup(n, (n,), int(m.weight.numel())))
        return groups, notes

    def _svd(self, m: nn.Module, name: str, ctx: ProbeContext):
        """One SVD per layer of the teacher, every rank cut from it; a layer another knob of a
        combination changed (pruned: another shape) gets its own."""
        shape, svd = ctx.cache.get(name, (None, None))
        if shape != tuple(m.weight.shape):
            return None
        return svd

    @contextlib.contextmanager
    def probed(
        self, model: nn.Module, group: LayerGroup, value: float, ctx: ProbeContext
    ) -> Iterator[tuple[nn.Module, float]]:
        m = model.get_submodule(group.name)
        k, reason = plan_layer(group.name, m, value)
        if k is None:
            raise Unmeasured(reason)
        if group.name not in ctx.cache:
            ctx.cache[group.name] = (tuple(m.weight.shape), layer_svd(m))
        factor = factor_linear if isinstance(m, nn.Linear) else factor_conv
        model.set_submodule(group.name, factor(m, k, self._svd(m, group.name, ctx)))
        try:
            yield model, round(k / full_rank(m), 4)  # ranks round up to multiples of 8: the rank kept
        finally:
            model.set_submodule(group.name, m)

    def probe_(self, model: nn.Module, values: Mapping[str, float], ctx: ProbeContext) -> nn.Module:
        for name, ratio in values.items():
            m = model.get_submodule(name)
            k = max(1, round(ratio * full_rank(m)))  # a measured ratio is k / full rank
            factor = factor_linear if isinstance(m, nn.Linear) else factor_conv
            model.set_submodule(name, factor(m, k, self._svd(m, name, ctx)))
        return model
