"""Per-layer plans: the sensitivity table, the allocation it drives, mixed precision on real
kernels, per-layer pruning, and the errors a per-layer map can raise."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from tradeoff.spaces import ApplyContext, Plan, PlanError, apply_plan, format_plan, validate_space
from tradeoff.spaces.allocation import allocate, grid, plan_from_params
from tradeoff.spaces.quantization import bit_budgets, fake_quantize
from tradeoff.spaces.runtimes.onnx_quantization import layer_bits_of, weight_initializers
from tradeoff.spaces.sensitivity import SensitivityTable, measure_sensitivity

WIDTH = 32


class ThreeLayers(nn.Module):
    """Three equal linear layers whose weights are exact at 2, 4 and 8 bits respectively (by
    construction, per output channel), so their sensitivity to those bit-widths is known."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.exact2 = nn.Linear(WIDTH, WIDTH)
        self.exact4 = nn.Linear(WIDTH, WIDTH)
        self.dense = nn.Linear(WIDTH, 10)
        with torch.no_grad():
            # {-1, 0, 1} x a per-row scale: 2-bit levels exactly
            levels = torch.randint(-1, 2, (WIDTH, WIDTH), generator=g).float()
            levels[:, 0] = 1.0  # every row reaches its peak
            self.exact2.weight.copy_(levels * torch.rand(WIDTH, 1, generator=g).add(0.5) / 4)
            # multiples of peak/7: 4-bit levels exactly, far from any 2-bit level
            levels = torch.randint(-7, 8, (WIDTH, WIDTH), generator=g).float()
            levels[:, 0] = 7.0
            self.exact4.weight.copy_(levels / 7 * torch.rand(WIDTH, 1, generator=g).add(0.5) / 4)
            self.dense.weight.copy_(torch.randn(10, WIDTH, generator=g) / WIDTH**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.dense(torch.relu(self.exact4(torch.relu(self.exact2(x)))))


def _data(n: int = 256):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, WIDTH, generator=g)
    return x


def test_fake_quantize_keeps_exact_levels() -> None:
    m = ThreeLayers()
    assert torch.allclose(fake_quantize(m.exact2.weight, 2), m.exact2.weight, atol=1e-6)
    assert torch.allclose(fake_quantize(m.exact4.weight, 4), m.exact4.weight, atol=1e-6)
    assert not torch.allclose(fake_quantize(m.exact4.weight, 2), m.exact4.weight, atol=1e-3)


def test_sensitivity_of_a_network_built_to_be_known() -> None:
    m = ThreeLayers().eval()
    x = _data()
    y = m(x).argmax(1)
    table = measure_sensitivity(m, x, y, example_input=x[:1], num_classes=10)
    effect = {
        r["group"]: {int(b): p["loss"] for b, p in r["points"].items()} for r in table.rows["weight_bits"]
    }
    assert effect["exact2"][2] < 1e-6 and effect["exact2"][4] < 1e-6
    assert effect["exact4"][4] < 1e-6 < effect["exact4"][2]
    assert effect["dense"][2] > effect["dense"][4] > effect["dense"][8] >= 0
    assert table.layers["exact2"]["params"] == WIDTH * WIDTH
    assert table.layers["dense"]["macs"] == WIDTH * 10
    # the table survives its stored form
    again = SensitivityTable.from_dict(table.to_dict())
    assert again.to_dict() == table.to_dict()

    # the allocation: under an average of (2 + 4 + 8) / 3 bits, each layer gets the bits at
    # which it is exact (equal weights: the budget allows exactly this one choice of least damage)
    bits = grid("weight_bits", {"choices": [32, 8, 4, 2]})
    weights = {r["group"]: r["params"] for r in table.rows["weight_bits"]}
    budget = (2 * weights["exact2"] + 4 * weights["exact4"] + 8 * weights["dense"]) / sum(weights.values())
    for metric in ("loss", "drop"):
        table.metric = metric
        chosen = allocate(table, "weight_bits", budget, 1.0, bits)
        if metric == "loss":
            assert {k: chosen[k] for k in weights} == {"exact2": 2, "exact4": 4, "dense": 8}
        mean = sum(weights[k] * chosen[k] for k in weights) / sum(weights.values())
        assert mean <= budget + 1e-9
    # sharpness 0: the uniform plan at the budget
    table.metric = "loss"
    assert set(allocate(table, "weight_bits", 4, 0.0, bits).values()) == {4}


def _table(rows: dict[str, list[tuple[str, int, dict[float, float]]]]) -> SensitivityTable:
    return SensitivityTable(
        rows={
            t: [
                {
                    "group": g,
                    "layers": [g],
                    "params": n,
                    "points": {v: {"loss": e, "drop": e} for v, e in pts.items()},
                }
                for g, n, pts in rs
            ]
            for t, rs in rows.items()
        },
        layers={},
    )


def test_allocation_prunes_the_insensitive_group_more_under_the_same_budget() -> None:
    table = _table(
        {
            "prune_ratio": [
                ("fragile", 100, {0.25: 1.0, 0.5: 4.0, 0.75: 9.0}),
                ("robust", 100, {0.25: 0.01, 0.5: 0.04, 0.75: 0.09}),
            ]
        }
    )
    values = grid("prune_ratio", {"low": 0.0, "high": 0.8, "step": 0.05})
    chosen = allocate(table, "prune_ratio", 0.4, 1.0, values)
    assert chosen["robust"] > 0.4 > chosen["fragile"]
    assert (chosen["robust"] + chosen["fragile"]) / 2 >= 0.4 - 1e-9  # the budget is a floor
    assert chosen["*"] == 0.0
    half = allocate(table, "prune_ratio", 0.4, 0.5, values)
    assert chosen["fragile"] <= half["fragile"] <= 0.4 <= half["robust"] <= chosen["robust"]
    assert allocate(table, "prune_ratio", 0.4, 0.0, values) == {"fragile": 0.4, "robust": 0.4, "*": 0.0}


def test_at_sharpness_0_a_budget_between_two_widths_spares_the_sensitive_layers() -> None:
    # 3 average bits over four equal layers on the grid 8/4/2: 2 and 4 are as far from 3, so the
    # uniform pull cannot choose; two layers at 4 and two at 2 meet the budget, and the measured
    # damage decides which two keep 4 bits
    table = _table(
        {
            "weight_bits": [
                ("a", 100, {8: 0.0, 4: 0.1, 2: 5.0}),
                ("b", 100, {8: 0.0, 4: 0.0, 2: 0.01}),
                ("c", 100, {8: 0.0, 4: 0.2, 2: 3.0}),
                ("d", 100, {8: 0.0, 4: 0.0, 2: 0.02}),
            ]
        }
    )
    bits = grid("weight_bits", {"choices": [32, 8, 4, 2]})
    chosen = allocate(table, "weight_bits", 3, 0.0, bits)
    assert {k: chosen[k] for k in "abcd"} == {"a": 4, "b": 2, "c": 4, "d": 2}


def test_bit_budgets_and_allocated_params_make_per_layer_plans() -> None:
    assert bit_budgets([32, 8, 4, 2]) == [32, 8, 6, 4, 3, 2]
    table = _table(
        {"weight_bits": [("a", 10, {8: 0.0, 4: 0.1, 2: 1.0}), ("b", 10, {8: 0.0, 4: 0.0, 2: 0.0})]}
    )
    space = validate_space({})
    plan = plan_from_params(
        {"weight_bits": 3, "allocation": 1.0}, granularity="allocated", table=table, space=space
    )
    assert plan.weight_bits == {"a": 4, "b": 2, "*": 4}
    assert "weight_bits=" in format_plan(plan)
    same = plan_from_params({"weight_bits": 8}, granularity="global", table=None, space=space)
    assert same == Plan(weight_bits=8)


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, 32, 3, padding=1)
        self.middle = nn.Conv2d(32, 32, 3, padding=1)
        self.last = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.first(x))
        x = torch.relu(self.middle(x))
        x = torch.relu(self.last(x))
        return self.fc(x.mean((2, 3)))


def _trained_convs() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = Convs()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        i = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x, y


@pytest.fixture(scope="module")
def convs():
    return _trained_convs()


def _ctx(x: torch.Tensor) -> ApplyContext:
    # the int8-kernel form (quantized activations), not whichever form was faster on this machine
    return ApplyContext(
        example_input=x[:1],
        num_classes=10,
        calibration=tuple(x[:256].split(64)),
        runtime="onnxruntime",
        int8_form="kernels",
    )


def test_a_float_layer_between_two_int8_layers_runs_and_keeps_top1(convs) -> None:
    model, x, _ = convs
    plan = Plan(weight_bits={"first": 8, "middle": 32, "last": 8, "fc": 8})
    compressed = apply_plan(model, plan, _ctx(x))
    proto = onnx.load_from_string(compressed.model.onnx)
    producer = {o: n for n in proto.graph.node for o in n.output}
    convs_ = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs_) == 3
    weight_from = [producer.get(n.input[1]) for n in convs_]
    # first and last read int8 weights through DequantizeLinear; the middle one a float initializer
    kinds = {
        n.name.split("/")[1]: (w.op_type if w is not None else "float") for n, w in zip(convs_, weight_from)
    }
    assert kinds == {"first": "DequantizeLinear", "middle": "float", "last": "DequantizeLinear"}
    # the middle conv's input comes dequantized (through float ops at most) and its output is
    # quantized again before the next int8 conv
    middle = next(n for n in convs_ if n.name.startswith("/middle/"))
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    up, ops = producer.get(middle.input[0]), []
    while up is not None and up.op_type != "DequantizeLinear" and len(ops) < 3:
        ops.append(up.op_type)
        up = producer.get(up.input[0])
    assert up is not None and up.op_type == "DequantizeLinear", ops
    down, ops = consumers[middle.output[0]], []
    while down and down[0].op_type != "QuantizeLinear" and len(ops) < 3:
        ops.append(down[0].op_type)
        down = consumers.get(down[0].output[0], [])
    assert down and down[0].op_type == "QuantizeLinear", ops
    with torch.no_grad():
        logits = model(x[:400])
        top2 = logits.topk(2, dim=1).values
        fixed = x[:400][top2[:, 0] - top2[:, 1] > 1.0][:100]  # inputs the float model is sure of
        reference = model(fixed).argmax(1)
        got = compressed.model(fixed).argmax(1)
        everything = (compressed.model(x[:400]).argmax(1) == logits.argmax(1)).float().mean()
    assert len(fixed) >= 50
    assert torch.equal(got, reference)
    assert everything >= 0.95
    assert compressed.facts.layer_bits == {"first": 8, "middle": 32, "last": 8, "fc": 8}


def test_two_layers_at_4_bits_and_one_at_8_have_the_hand_computed_size(convs) -> None:
    from tradeoff.search.trial.measure.size import onnx_encoded_size

    model, x, _ = convs
    plan = Plan(weight_bits={"first": 8, "middle": 4, "last": 4, "fc": 32})
    compressed = apply_plan(model, plan, _ctx(x))
    data = compressed.model.onnx
    proto = onnx.load_from_string(data)
    assert len(weight_initializers(proto)) == 3  # fc stays float
    recorded = layer_bits_of(proto)
    assert sorted(recorded.values()) == [4, 4, 8]
    size, method = onnx_encoded_size(data, weight_bits=compressed.weight_bits)
    # each 4-bit layer's 32 x 32 x 3 x 3 int8 values (one byte each in the file) count half
    per_layer = 32 * 32 * 3 * 3
    assert size == len(data) - 2 * (per_layer - per_layer * 4 // 8)
    assert "mixed precision" in method and "4x2" in method
    # its 4-bit layers hold 4-bit levels: at most 15 distinct values per output channel
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    for name, bits in recorded.items():
        w = inits[name]
        assert max(len(set(row.ravel().tolist())) for row in w) <= 2**bits - 1


def test_per_layer_pruning_prunes_each_group_at_its_ratio() -> None:
    from tradeoff.search.task.models import MODELS
    from tradeoff.spaces.pruning import prune_groups

    model = MODELS["tiny_resnet"](1, 8, 10).eval()
    x = torch.randn(1, 1, 8, 8)
    groups = {root: layers for root, layers, _ in prune_groups(model, x, 10)}
    assert "layer4.0.conv1" in groups and groups["layer4.0.conv1"] == ["layer4.0.conv1", "layer4.0.conv2"]
    ctx = ApplyContext(example_input=x, num_classes=10)
    out = apply_plan(model, Plan(prune_ratio={"layer4.0.conv1": 0.5, "layer3.0.conv1": 0.25}), ctx).model
    assert out.layer4[0].conv1.out_channels == 64  # 128 x (1 - 0.5)
    assert out.layer3[0].conv1.out_channels == 48  # 64 x (1 - 0.25)
    assert out.layer2[0].conv1.out_channels == 32  # not named: kept


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (Plan(weight_bits={"conv9": 4}), "no layer 'conv9'"),
        (Plan(prune_ratio={"layer9": 0.5}), "no layer 'layer9'"),
        (Plan(rank_ratio={"nope.conv": 0.5}), "no layer 'nope.conv'"),
        (Plan(weight_bits={"conv1": 5.5}), "not one of"),
        (Plan(prune_ratio={"conv1": 0.99}), "outside [0.0, 0.95]"),
    ],
)
def test_a_bad_per_layer_map_is_a_one_line_error(plan: Plan, message: str) -> None:
    from tradeoff.search.task.models import MODELS

    model = MODELS["tiny_resnet"](1, 8, 10).eval()
    x = torch.randn(1, 1, 8, 8)
    ctx = ApplyContext(example_input=x, num_classes=10, calibration=(torch.randn(8, 1, 8, 8),))
    with pytest.raises(PlanError, match=message.replace("[", r"\[").replace(".", r"\.")) as e:
        apply_plan(model, plan, ctx)
    assert "\n" not in str(e.value)


def test_only_a_per_layer_knob_the_space_switches_on_must_list_its_groups(monkeypatch) -> None:
    from tradeoff.spaces import KNOBS, Knob, SpaceError
    from tradeoff.spaces.allocation import check_granularity

    class Uniform(Knob):  # says per_layer, lists no groups
        name, off, per_layer = "uniform", 0.0, True

    monkeypatch.setitem(KNOBS, "uniform", Uniform())
    on, off = {"uniform": {"low": 0.0, "high": 0.5, "step": 0.5}}, {"uniform": {"low": 0.0, "high": 0.0}}
    for granularity in ("allocated", "layer"):
        with pytest.raises(SpaceError, match=f"knob `uniform` .* --granularity {granularity} cannot set it"):
            check_granularity(granularity, on)
        check_granularity(granularity, off)  # never switched on: nothing to set layer by layer
    check_granularity("global", on)  # one number, as it may be
    assert not Uniform.allocatable() and KNOBS["prune_ratio"].allocatable()
    assert KNOBS["student_width"].allocatable()  # one width per resolution stage
    check_granularity("allocated", {"student_width": {"low": 0.25, "high": 1.0, "step": 0.25}})
