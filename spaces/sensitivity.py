"""Sensitivity analysis: what compressing one layer group alone does to the teacher.

For every coupled channel group (pruning: removed at a few ratios by the same torch-pruning
surgery a plan uses), every conv/linear layer that low-rank can factor (at a few rank ratios,
the same SVD), and every conv/linear layer (its weights quantized per output channel to each
bit-width's symmetric levels, the levels the runtime's file stores; activations left float:
they are 8-bit for every layer alike, so they do not tell layers apart), with the rest of the
network intact, two effects are measured on a fixed held-out batch:

- ``loss``: the increase of the distillation loss (KL divergence from the teacher's soft
  predictions, the quantity fine-tuning minimises) and
- ``drop``: the loss of top-1 accuracy (points of a fraction).

Which one predicts better is measured too, the way an allocation uses them: random combinations
of the table's single-group changes (pruning, quantization and low-rank) are applied together,
and the metric whose per-group effects, summed, rank those combinations closer to their
measured accuracy (Spearman) is the study's ``metric`` (the drop, mostly 0 for one layer on a
few hundred images, only when it is better by more than the correlation's standard error). Each
layer's share of parameters, MACs and of the float teacher's latency in ONNX Runtime (its
profiler's per-node times) completes the table.

The table is data (``to_dict``/JSON), computed once per study and stored with it. Grouped and
depthwise convolutions are listed as skipped for low-rank (their kernels are already thin).
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
import torch_pruning as tp
from torch import nn

from tradeoff.spaces._base import each_layer_call, macs_per_output
from tradeoff.spaces.low_rank import factor_conv, factor_linear, layer_svd, plan_layer
from tradeoff.spaces.pruning import classifier_layers, prune_groups, tp_prune_, unprunable

TABLE_VERSION = 1
PRUNE_POINTS = (0.25, 0.5, 0.75)
RANK_POINTS = (0.5, 0.25, 0.125)
EVAL_IMAGES = 256  # the held-out batch, at most
EVAL_PIXELS = 2**20  # ... and at most this many pixels (at least 32 images): 256 at 64 px, 32 at 224 px
COMBINATIONS = 16  # random multi-group changes that check which metric predicts better
METRICS = ("loss", "drop")
TECHNIQUES = ("prune_ratio", "rank_ratio", "weight_bits")


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


OFF = {"prune_ratio": 0.0, "rank_ratio": 1.0, "weight_bits": 32.0}


def _interpolate(
    points: Mapping[float, Mapping[str, float]], technique: str, value: float, metric: str
) -> float:
    off = OFF[technique]
    toward = -1 if technique in ("rank_ratio", "weight_bits") else 1  # the sign of more compression
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


def fake_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` at the symmetric per-output-channel levels of ``bits`` bits (what the runtime's
    file stores: ``spaces.runtimes.onnx_quantization.restrict_weights``; 8 bits: 127 levels)."""
    levels = 2 ** (bits - 1) - 1
    peak = w.detach().abs().flatten(1).max(dim=1).values.clamp_min(1e-12)
    scale = (peak / levels).view(-1, *([1] * (w.dim() - 1)))
    return (w / scale).round().clamp(-levels, levels) * scale


def _full_rank(m: nn.Module) -> int:
    if isinstance(m, nn.Linear):
        return min(m.in_features, m.out_features)
    o, c, kh, kw = m.weight.shape
    return min(c * kh, o * kw)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


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
    bits: Sequence[int] = (8, 4, 2),
    prune_points: Sequence[float] = PRUNE_POINTS,
    rank_points: Sequence[float] = RANK_POINTS,
    temperature: float = 4.0,
    seed: int = 0,
    log=lambda _msg: None,
) -> SensitivityTable:
    """The table of the module docstring for ``teacher`` (never changed: copies are)."""
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
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

    # quantization: one layer's weights at a time, swapped in place and back
    t = time.perf_counter()
    quant_rows = []
    for name in layers:
        m = modules[name]
        original = m.weight.data.clone()
        points = {}
        for b in sorted(set(bits), reverse=True):
            if b >= 32:
                continue
            m.weight.data.copy_(fake_quantize(original, b))
            points[float(b)] = score(work)
            m.weight.data.copy_(original)
        quant_rows.append(
            {"group": name, "layers": [name], "params": table_layers[name]["params"], "points": points}
        )
    seconds["weight_bits_s"] = round(time.perf_counter() - t, 2)
    progress(
        f"sensitivity: weight_bits: {len(quant_rows)} layers at {len(bits)} bit-widths "
        f"in {seconds['weight_bits_s']:.0f} s"
    )

    # low-rank: one layer factored at a time, swapped in and back
    t = time.perf_counter()
    rank_rows = []
    svds: dict[str, tuple] = {}  # one SVD per layer, every rank cut from it (the predictor's too)
    for name in layers:
        m = modules[name]
        points = {}
        reason = ""
        for r in rank_points:
            k, reason = plan_layer(name, m, r)
            if k is None:
                if not points and "saves no" not in reason:
                    break
                continue
            actual = round(k / _full_rank(m), 4)  # ranks round up to multiples of 8: the rank kept
            if actual in points:
                continue
            if name not in svds:
                svds[name] = layer_svd(m)
            factor = factor_linear if isinstance(m, nn.Linear) else factor_conv
            _set(work, name, factor(m, k, svds[name]))
            points[actual] = score(work)
            _set(work, name, m)
        if points:
            rank_rows.append(
                {"group": name, "layers": [name], "params": table_layers[name]["params"], "points": points}
            )
        else:
            skipped.append(f"rank_ratio: {name}: {reason}")
    seconds["rank_ratio_s"] = round(time.perf_counter() - t, 2)
    progress(
        f"sensitivity: rank_ratio: {len(rank_rows)} factorable layers in {seconds['rank_ratio_s']:.0f} s"
    )

    # pruning: one coupled group at a time, by the surgery plans use, on a copy
    t = time.perf_counter()
    prune_rows = []
    try:
        groups = prune_groups(work, example_input[:1], num_classes)
    except Exception as e:  # noqa: BLE001 - torch-pruning cannot trace this model whole
        groups = []
        skipped.append(f"prune_ratio: *: torch-pruning's graph failed ({type(e).__name__})")
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    for root, members, params in groups:
        points = {}
        for r in prune_points:
            model = copy.deepcopy(teacher)
            ignored = classifier_layers(model, num_classes) + unprunable(model)
            try:
                tp_prune_(model, example_input[:1], {root: r}, importance, ignored)
            except Exception as e:  # noqa: BLE001
                skipped.append(f"prune_ratio: {root}: {type(e).__name__}")
                break
            if any(isinstance(m, (nn.Conv2d, nn.Linear)) and 0 in m.weight.shape for m in model.modules()):
                break
            # channels round to multiples of 8: the fraction the root layer actually lost
            before = teacher.get_submodule(root).weight.shape[0]
            actual = round(1 - model.get_submodule(root).weight.shape[0] / before, 4)
            if actual > 0 and actual not in points:
                points[actual] = score(model)
        if points:
            prune_rows.append({"group": root, "layers": members, "params": params, "points": points})
    seconds["prune_ratio_s"] = round(time.perf_counter() - t, 2)
    progress(
        f"sensitivity: prune_ratio: {len(prune_rows)} channel groups in {seconds['prune_ratio_s']:.0f} s"
    )

    table = SensitivityTable(
        rows={"prune_ratio": prune_rows, "rank_ratio": rank_rows, "weight_bits": quant_rows},
        layers=table_layers,
        skipped=skipped,
        baseline={"accuracy": round(score.acc, 6)},
        images=len(x),
    )
    t = time.perf_counter()
    table.predictor = _which_predicts(
        table, teacher, score, seed=seed, svds=svds, example_input=example_input, num_classes=num_classes
    )
    table.metric = table.predictor.get("metric", "loss")
    seconds["predictor_s"] = round(time.perf_counter() - t, 2)
    table.seconds = seconds
    log(
        f"sensitivity: {len(prune_rows)} channel groups, {len(rank_rows)} factorable and {len(quant_rows)} "
        f"quantizable layers measured on {len(x)} held-out images in {time.perf_counter() - t0:.1f} s; "
        f"{table.metric} predicts better ({_predictor_text(table.predictor)})"
    )
    return table


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
    svds: dict,
    example_input: torch.Tensor,
    num_classes: int,
) -> dict[str, Any]:
    """Apply random combinations of the table's single-group changes together (a few channel
    groups pruned, a quarter to three quarters of the layers quantized, some layers factored) and
    compare each metric's summed per-group prediction with the combination's measured accuracy
    drop (Spearman's rank correlation); the better one is the table's metric."""
    from scipy.stats import spearmanr

    rng = random.Random(seed)
    prune, rank, quant = (table.rows[t] for t in TECHNIQUES)
    if len(quant) < 2:
        return {"metric": "loss", "combinations": 0, "spearman": {}, "why": "too few layers to compare"}
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    predicted = {m: [] for m in METRICS}
    measured = []

    def add(total, row, value):
        for m in METRICS:
            total[m] += row["points"][value][m]

    for _ in range(COMBINATIONS):
        model = copy.deepcopy(teacher)
        total = dict.fromkeys(METRICS, 0.0)
        changed: set[str] = set()
        chosen = rng.sample(prune, k=min(len(prune), rng.randint(0, 3)))
        if chosen:
            ratios = {row["group"]: rng.choice(list(row["points"])) for row in chosen}
            ignored = classifier_layers(model, num_classes) + unprunable(model)
            try:
                tp_prune_(model, example_input[:1], ratios, importance, ignored)
                for row in chosen:
                    add(total, row, ratios[row["group"]])
                    changed.update(row["layers"])
            except Exception:  # noqa: BLE001 - this combination without pruning
                model = copy.deepcopy(teacher)
        modules = dict(model.named_modules())
        for row in rng.sample(quant, k=max(1, round(rng.uniform(0.25, 0.75) * len(quant)))):
            b = rng.choice(list(row["points"]))
            w = modules[row["group"]].weight
            w.data.copy_(fake_quantize(w.data, int(b)))
            add(total, row, b)
        for row in rng.sample(rank, k=round(rng.uniform(0, 0.5) * len(rank))):
            r = rng.choice(list(row["points"]))
            m_ = modules[row["group"]]
            k = max(1, round(r * _full_rank(m_)))
            factor = factor_linear if isinstance(m_, nn.Linear) else factor_conv
            svd = None if row["group"] in changed else svds.get(row["group"])  # a pruned layer: its own SVD
            _set(model, row["group"], factor(m_, k, svd))
            add(total, row, r)
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
        "random combinations (pruning, quantization and low-rank together); the drop is chosen only when "
        f"its correlation is higher by more than {margin:.2f} (the standard error of a rank correlation of "
        f"{COMBINATIONS} pairs)",
    }
