"""Sensitivity analysis: what compressing one layer group alone does to the teacher.

For every per-layer knob (``Knob.allocatable``) and every one of its layer groups, at each of
the knob's settings (``Knob.sensitivity_values``), with the rest of the network intact
(``Knob.probed``), two effects are measured on a fixed held-out batch. The built-in knobs:
pruning removes each coupled channel group at a few ratios by the same torch-pruning surgery a
plan uses; low-rank factors each layer it can at a few rank ratios by the same SVD;
quantization restricts each conv/linear layer's weights per output channel to each bit-width's
symmetric levels, the levels the runtime's file stores (activations left float: they are 8-bit
for every layer alike, so they do not tell layers apart). The effects:

- ``loss``: the increase of the distillation loss (KL divergence from the teacher's soft
  predictions, the quantity fine-tuning minimises) and
- ``drop``: the loss of top-1 accuracy (points of a fraction).

Which one predicts better is measured too, the way an allocation uses them: random combinations
of the table's single-group changes (of every knob: ``Knob.probe_``) are applied together,
and the metric whose per-group effects, summed, rank those combinations closer to their
measured accuracy (Spearman) is the study's ``metric`` (the drop, mostly 0 for one layer on a
few hundred images, only when it is better by more than the correlation's standard error). Each
layer's share of parameters, MACs and of the float teacher's latency in ONNX Runtime (its
profiler's per-node times) completes the table.

The table is data (``to_dict``/JSON), computed once per study and stored with it. What a knob
cannot change is listed as skipped (low-rank: grouped and depthwise convolutions, whose kernels
are already thin).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tradeoff.spaces._base import (
    KNOBS,
    Knob,
    LayerGroup,
    PlanError,
    ProbeContext,
    Unmeasured,
    allocatable_knobs,
    each_layer_call,
    macs_per_output,
    skip_note,
)

TABLE_VERSION = 1
EVAL_IMAGES = 256  # the held-out batch, at most
EVAL_PIXELS = 2**20  # ... and at most this many pixels (at least 32 images): 256 at 64 px, 32 at 224 px
COMBINATIONS = 16  # random multi-group changes that check which metric predicts better
METRICS = ("loss", "drop")


@dataclass
class SensitivityTable:
    """``rows[technique]``: one entry per layer group: ``group`` (the per-layer key), ``layers``
    (the conv/linear modules it covers), ``params`` (their weights), ``points`` ({value:
    {"loss", "drop"}}); ``layers``: {module: {"params", "macs", "latency_ms"}}; ``metric``: the
    better predictor and ``predictor`` the evidence; ``skipped``: ``technique: layer: reason``."""

    rows: dict[str, list[dict[str, Any]]]
    layers: dict[str, dict[str, float]]
    metric: str = "loss"
    predictor: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    images: int = 0
    version: int = TABLE_VERSION

    def to_dict(self) -> dict[str, Any]:
        rows = {
            t: [dict(r, points={_key(v): p for v, p in r["points"].items()}) for r in rs]
            for t, rs in self.rows.items()
        }
        return {
            "version": self.version,
            "metric": self.metric,
            "predictor": self.predictor,
            "baseline": self.baseline,
            "images": self.images,
            "seconds": self.seconds,
            "skipped": self.skipped,
            "layers": self.layers,
            "rows": rows,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityTable:
        rows = {
            t: [dict(r, points={float(v): p for v, p in r["points"].items()}) for r in rs]
            for t, rs in data["rows"].items()
        }
        return cls(
            rows=rows,
            layers=dict(data["layers"]),
            metric=data.get("metric", "loss"),
            predictor=dict(data.get("predictor", {})),
            skipped=list(data.get("skipped", [])),
            baseline=dict(data.get("baseline", {})),
            seconds=dict(data.get("seconds", {})),
            images=int(data.get("images", 0)),
            version=int(data.get("version", TABLE_VERSION)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def effect(self, technique: str, group: str, value: float, metric: str | None = None) -> float:
        """The measured effect of ``technique`` at ``value`` on ``group`` alone, interpolated
        linearly between the measured points (0 at the off value, extrapolated past the last
        point along the last segment)."""
        row = next(r for r in self.rows[technique] if r["group"] == group)
        return _interpolate(row["points"], technique, value, metric or self.metric)

    def summary(self) -> dict[str, Any]:
        """What the study attribute shows: counts, the metric and its evidence, the cost."""
        return {
            "metric": self.metric,
            "predictor": self.predictor,
            "groups": {t: len(rs) for t, rs in self.rows.items()},
            "skipped": len(self.skipped),
            "images": self.images,
            "seconds": round(sum(self.seconds.values()), 1),
        }


def _key(v: float) -> str:
    return f"{v:g}"


def compression_order(technique: str, values) -> list[float]:
    """``values`` of a knob from the least to the most compression (rank ratios and bits
    descending, pruning ratios ascending)."""
    knob = KNOBS.get(technique)
    return sorted(values, reverse=knob is not None and not knob.compresses_upward)


def _interpolate(
    points: Mapping[float, Mapping[str, float]], technique: str, value: float, metric: str
) -> float:
    knob = KNOBS[technique]
    off = float(knob.off)
    toward = 1 if knob.compresses_upward else -1  # the sign of more compression
    xs = sorted({off, *points}, key=lambda v: v * toward)
    ys = [0.0 if x == off else float(points[x][metric]) for x in xs]
    t, ts = value * toward, [x * toward for x in xs]
    if t <= ts[0]:
        return 0.0
    for i in range(1, len(ts)):
        if t <= ts[i]:
            a = (t - ts[i - 1]) / (ts[i] - ts[i - 1])
            return max(0.0, ys[i - 1] + a * (ys[i] - ys[i - 1]))
    slope = (ys[-1] - ys[-2]) / (ts[-1] - ts[-2])
    return max(0.0, ys[-1], ys[-1] + slope * (t - ts[-1]))


# -- measuring ----------------------------------------------------------------------------------


class _Scorer:
    """The effects of a changed model on the fixed held-out batch, against the teacher."""

    def __init__(self, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, temperature: float):
        self.x, self.y, self.t = x, y, temperature
        with torch.no_grad():
            logits = teacher.eval()(x)
        self.soft = torch.log_softmax(logits / temperature, dim=1)
        self.acc = float((logits.argmax(1) == y).float().mean())
        self.calls = 0

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        self.calls += 1
        logits = model.eval()(self.x)
        log_p = torch.log_softmax(logits / self.t, dim=1)
        kl = torch.nn.functional.kl_div(log_p, self.soft, log_target=True, reduction="batchmean")
        acc = float((logits.argmax(1) == self.y).float().mean())
        return {"loss": round(float(kl) * self.t**2, 6), "drop": round(self.acc - acc, 6)}


@torch.no_grad()
def layer_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """MACs of every conv/linear layer in one forward pass of ``example_input``, per sample."""
    out: dict[str, int] = {}

    def record(name, m, _inputs, o):
        out[name] = out.get(name, 0) + int(o.numel() // o.shape[0] * macs_per_output(m))

    each_layer_call(model, example_input, record)
    return out


def layer_latency(model: nn.Module, example_input: torch.Tensor, runs: int = 30) -> dict[str, float]:
    """Milliseconds per call of each conv/linear layer of float ``model`` in ONNX Runtime (its
    profiler's kernel times per node, median over ``runs`` calls, with the node's fused
    activation), keyed by module."""
    import onnx
    import onnxruntime as ort

    from tradeoff.spaces.runtimes import onnx_bytes
    from tradeoff.spaces.runtimes.onnx_quantization import onnx_module_names

    data = onnx_bytes(model, example_input[:1])
    proto = onnx.load_from_string(data)
    names = onnx_module_names(proto, {n for n, _ in model.named_modules()})
    producer = {o: n for n in proto.graph.node for o in n.output}
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = max(1, torch.get_num_threads()), 1
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as d:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "profile")
        session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        x = example_input[:1].numpy()
        for _ in range(5 + runs):
            session.run(None, {"input": x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    times: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            times.setdefault(node, []).append(float(e["dur"]) / 1000.0)
    out: dict[str, float] = {}
    for node, ts in times.items():
        module = names.get(node)
        if module is None:
            # a node fused by the runtime (conv + add + relu in the NCHWc layout) is named after the
            # tensor it writes: walk back from that tensor's producer to the conv/linear node
            origin = producer.get(node.removesuffix("_nchwc"))
            for _ in range(4):
                if origin is None or origin.name in names:
                    break
                origin = producer.get(origin.input[0]) if origin.input else None
            module = names.get(origin.name) if origin is not None else None
        if module is not None:
            ts = sorted(ts[5:] or ts)
            out[module] = out.get(module, 0.0) + ts[len(ts) // 2]
    return out


def measure_sensitivity(
    teacher: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    example_input: torch.Tensor,
    num_classes: int,
    settings: Mapping[str, Sequence[float]] | None = None,
    temperature: float = 4.0,
    seed: int = 0,
    log=lambda _msg: None,
) -> SensitivityTable:
    """The table of the module docstring for ``teacher`` (never changed: copies are).
    ``settings``: {knob: the values each of its groups is measured at}, for per-layer knobs
    (``Knob.allocatable``); None: every such knob searched by default at its
    ``sensitivity_values`` (and ``allocated_by_default``)."""
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    if settings is None:
        settings = {
            k.name: k.sensitivity_values(k.default_space)
            for k in allocatable_knobs()
            if k.searched_by_default and k.allocated_by_default
        }
    knobs = [k for k in allocatable_knobs() if k.name in settings]
    unknown = set(settings) - {k.name for k in knobs}
    if unknown:
        raise ValueError(f"no per-layer knob is registered as {sorted(unknown)}")
    teacher = teacher.eval()
    images = min(EVAL_IMAGES, max(32, EVAL_PIXELS // max(1, x[0, 0].numel())))
    x, y = x[:images], y[:images]
    score = _Scorer(teacher, x, y, temperature)
    skipped: list[str] = []
    work = copy.deepcopy(teacher)
    modules = dict(work.named_modules())
    layers = [n for n, m in work.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    macs = layer_macs(work, example_input[:1])
    try:
        latency = layer_latency(work, example_input)
    except Exception as e:  # noqa: BLE001 - a model the exporter rejects: no latency shares
        latency = {}
        skipped.append(f"latency: *: ONNX Runtime profile failed ({type(e).__name__})")
    table_layers = {
        n: {
            "params": int(modules[n].weight.numel()),
            "macs": int(macs.get(n, 0)),
            "latency_ms": round(latency.get(n, 0.0), 6),
        }
        for n in layers
    }
    seconds["shares_s"] = round(time.perf_counter() - t0, 2)
    progress = getattr(log, "progress", log)  # a line that updates in place on a terminal
    progress(f"sensitivity: {len(layers)} layers' MACs and latency shares in {seconds['shares_s']:.0f} s")

    rows: dict[str, list[dict[str, Any]]] = {}
    contexts = {k.name: ProbeContext(example_input, num_classes) for k in knobs}
    for knob in knobs:
        t = time.perf_counter()
        groups, notes = knob.layer_groups(work, contexts[knob.name])
        skipped += notes
        rows[knob.name] = []
        for group in groups:
            points = _measure_group(
                knob, work, group, settings[knob.name], score, contexts[knob.name], skipped
            )
            if points:
                row = {"group": group.name, "layers": list(group.layers), "params": group.params}
                rows[knob.name].append(dict(row, points=points))
        seconds[f"{knob.name}_s"] = round(time.perf_counter() - t, 2)
        progress(
            f"sensitivity: {knob.name}: {len(rows[knob.name])} layer groups at {len(settings[knob.name])} "
            f"settings in {seconds[f'{knob.name}_s']:.0f} s"
        )

    table = SensitivityTable(
        rows=rows,
        layers=table_layers,
        skipped=skipped,
        baseline={"accuracy": round(score.acc, 6)},
        images=len(x),
    )
    t = time.perf_counter()
    table.predictor = _which_predicts(table, teacher, score, seed=seed, contexts=contexts)
    table.metric = table.predictor.get("metric", "loss")
    seconds["predictor_s"] = round(time.perf_counter() - t, 2)
    table.seconds = seconds
    counts = ", ".join(f"{len(rs)} {name} groups" for name, rs in rows.items())
    log(
        f"sensitivity: {counts or 'no per-layer knob'} measured on {len(x)} held-out images in "
        f"{time.perf_counter() - t0:.1f} s; {table.metric} predicts better "
        f"({_predictor_text(table.predictor)})"
    )
    return table


def _measure_group(
    knob: Knob,
    work: nn.Module,
    group: LayerGroup,
    values: Sequence[float],
    score: _Scorer,
    ctx: ProbeContext,
    skipped: list[str],
) -> dict[float, dict[str, float]]:
    """{value the group really took: its effects} for ``group`` alone at each of ``values``;
    a setting that changes nothing is passed over, a failure ends the group (listed)."""
    points: dict[float, dict[str, float]] = {}
    reason = "no setting changed it"
    for value in values:
        try:
            with knob.probed(work, group, value, ctx) as (model, actual):
                actual = float(actual)
                if actual != float(knob.off) and actual not in points:
                    points[actual] = score(model)
        except Unmeasured as e:
            reason = str(e)
        except Exception as e:  # noqa: BLE001 - a group this knob cannot change: listed, not fatal
            message = str(e).splitlines()[0] if str(e) else ""
            reason = message if isinstance(e, PlanError) else f"{type(e).__name__}: {message}".rstrip(": ")
            skipped.append(skip_note(knob.name, group.name, reason))
            return points
    if not points:
        skipped.append(skip_note(knob.name, group.name, reason))
    return points


def _predictor_text(p: Mapping[str, Any]) -> str:
    rho = p.get("spearman", {})
    return (
        ", ".join(f"Spearman {k} {v:.2f}" for k, v in rho.items())
        + f" over {p.get('combinations', 0)} combinations"
    )


@torch.no_grad()
def _which_predicts(
    table: SensitivityTable,
    teacher: nn.Module,
    score: _Scorer,
    *,
    seed: int,
    contexts: Mapping[str, ProbeContext],
) -> dict[str, Any]:
    """Apply random combinations of the table's single-group changes together (per knob, in
    application order: ``Knob.combination_size`` of its groups, each at one of its measured
    values) and compare each metric's summed per-group prediction with the combination's
    measured accuracy drop (Spearman's rank correlation); the better one is the table's metric."""
    from scipy.stats import spearmanr

    rng = random.Random(seed)
    knobs = [KNOBS[name] for name in table.rows if name in contexts]
    if sum(len(table.rows[k.name]) for k in knobs) < 2:
        return {"metric": "loss", "combinations": 0, "spearman": {}, "why": "too few layer groups to compare"}
    predicted = {m: [] for m in METRICS}
    measured = []
    for _ in range(COMBINATIONS):
        model = copy.deepcopy(teacher)
        total = dict.fromkeys(METRICS, 0.0)
        for knob in knobs:
            rows = table.rows[knob.name]
            chosen = rng.sample(rows, k=knob.combination_size(rng, len(rows)))
            values = {row["group"]: rng.choice(list(row["points"])) for row in chosen}
            if not values:
                continue
            try:
                model = knob.probe_(copy.deepcopy(model), values, contexts[knob.name])
            except Exception:  # noqa: BLE001 - this combination without this knob
                continue
            for row in chosen:
                for m in METRICS:
                    total[m] += row["points"][values[row["group"]]][m]
        measured.append(score(model)["drop"])
        for m in METRICS:
            predicted[m].append(total[m])
    rho = {}
    for m in METRICS:
        with warnings.catch_warnings():  # a constant series (no combination changed top-1): no correlation
            warnings.simplefilter("ignore")
            value = spearmanr(predicted[m], measured).statistic
        rho[m] = round(float(value), 3) if math.isfinite(value) else 0.0
    # the accuracy drop of one layer on a few hundred images is mostly 0 (ties): it is chosen only
    # when it predicts better by more than a rank correlation's standard error over these pairs
    margin = 1 / math.sqrt(COMBINATIONS - 1)
    best = "drop" if rho["drop"] > rho["loss"] + margin else "loss"
    return {
        "metric": best,
        "combinations": COMBINATIONS,
        "spearman": rho,
        "why": "Spearman correlation of the summed per-group effects with the measured accuracy drop of "
        "random combinations (every per-layer knob together); the drop is chosen only when "
        f"its correlation is higher by more than {margin:.2f} (the standard error of a rank correlation of "
        f"{COMBINATIONS} pairs)",
    }
