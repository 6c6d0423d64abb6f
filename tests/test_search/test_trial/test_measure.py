from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tradeoff.search.trial import measure as M
from tradeoff.search.trial.figures import FIGURES
from tradeoff.search.trial.measure import energy


def small_net() -> nn.Module:
    # conv: 4 filters of 1x3x3, no bias -> 36 params, 4*9*64 = 2304 MACs on 8x8
    # linear: 256 -> 10 with bias -> 2570 params, 2560 MACs
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)
    )


X = torch.randn(1, 1, 8, 8)


def test_params_and_flops_match_a_hand_count():
    net = small_net()
    assert M.count_params(net) == 36 + 2570
    total, macs = M.count_flops(net, X)
    assert macs == 2304 + 2560
    assert total >= macs


def test_sparse_params_count_non_zeros():
    net = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, :3] = 1.0
    assert M.count_params(net) == 100
    assert M.count_params(net, sparse=True) == 3


def test_size_is_the_serialized_float32_weights():
    net = nn.Linear(512, 256)
    raw = 4 * (512 * 256 + 256)
    size = M.serialized_size(net)
    assert raw <= size <= raw + 2048  # pickle framing is all the overhead


def test_deployable_matches_eager_output():
    net = small_net().eval()
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(M.deploy(net, "torchscript", X)(x), net(x))


def test_latency_statistics_are_ordered_and_positive():
    med, p10, p90 = M.latency(M.deploy(small_net(), "torchscript", X), X, warmup=2, repeats=20)
    assert 0 < p10 <= med <= p90


def test_accuracy_of_a_constant_predictor_is_the_class_share():
    class AlwaysZero(nn.Module):
        def forward(self, x):
            out = torch.zeros(len(x), 3)
            out[:, 0] = 1
            return out

    y = torch.tensor([0, 0, 1, 2, 0, 1, 2, 2])
    assert M.accuracy(AlwaysZero(), torch.zeros(8, 1), y, batch_size=3) == pytest.approx(3 / 8)


def test_energy_estimate_follows_the_horowitz_table_per_layer():
    # small_net at batch 1: conv 2304 MACs, 36 weights, input 64 + output 256 values;
    # linear 2560 MACs, 2560 weights, input 256 + output 10 values
    layers = M.layer_traffic(small_net(), X, weight_bits=32, activation_bytes=4)
    assert [(m, w, a) for _, m, w, a in layers] == [(2304, 36 * 4, 320 * 4), (2560, 2560 * 4, 266 * 4)]
    weights, acts = (36 + 2560) * 4, (320 + 266) * 4
    # everything fits a 1 MiB cache: weights and activations at the cache's energy
    e, method = M.estimated_energy_mj(layers, other_flops=10, bits=32, cache=(1 << 20, "test"))
    pj = 4864 * 4.6 + 10 * 0.9 + (weights + acts) * 100 / 8
    assert e == pytest.approx(pj * 1e-9)
    assert method.startswith("estimated: per layer")
    # a cache too small for the weights: they come from DRAM, the small activations still fit
    e_dram, method = M.estimated_energy_mj(layers, other_flops=10, bits=32, cache=(2048, "test"))
    assert e_dram == pytest.approx((4864 * 4.6 + 10 * 0.9 + weights * 1950 / 8 + acts * 100 / 8) * 1e-9)
    assert "from DRAM" in method
    # int8: a quarter of the weight bytes, int8 MACs
    layers8 = M.layer_traffic(small_net(), X, weight_bits=8, activation_bytes=1)
    e8, _ = M.estimated_energy_mj(layers8, other_flops=10, bits=8, cache=(1 << 20, "test"))
    assert e8 == pytest.approx((4864 * 0.3 + 10 * 0.9 + (weights + acts) / 4 * 100 / 8) * 1e-9)


@pytest.mark.parametrize(
    "value, size", [("4M", 4 << 20), ("512K", 512 << 10), ("32MiB", 32 << 20), ("65536", 65536)]
)
def test_the_target_cache_replaces_this_machines_in_the_estimate_and_its_method(value, size, monkeypatch):
    layers = M.layer_traffic(small_net(), X, weight_bits=32, activation_bytes=4)
    monkeypatch.delenv(energy.ENV_LLC, raising=False)
    here, where = M.cache_bytes()
    assert "TRADEOFF_LLC" not in where
    monkeypatch.setenv(energy.ENV_LLC, value)
    cache = M.cache_bytes()
    assert cache[0] == size and "$TRADEOFF_LLC, the target's" in cache[1]
    e, method = M.estimated_energy_mj(layers, other_flops=10, bits=32, cache=cache)
    assert cache[1] in method
    # the 10,384 weight bytes fit a 64 KiB cache and up, so the estimate is the all-cached one
    assert e == pytest.approx(M.estimated_energy_mj(layers, other_flops=10, bits=32, cache=(1 << 20, ""))[0])
    # a target cache too small for them: weights from DRAM whatever this machine has
    monkeypatch.setenv(energy.ENV_LLC, "4K")
    assert "from DRAM" in M.estimated_energy_mj(layers, other_flops=10, bits=32, cache=M.cache_bytes())[1]


def test_measure_records_every_figure_with_its_method():
    net = small_net()
    y = torch.randint(0, 10, (16,))
    m = M.measure(
        net, torch.randn(16, 1, 8, 8), y, example_input=X, warmup=2, repeats=10, energy_seconds=0.05
    )
    assert m.params == 2606 and m.flops >= 4864
    assert m.size_bytes >= 4 * 2606
    assert m.latency_threads == torch.get_num_threads()
    assert m.latency_p10_ms <= m.latency_ms <= m.latency_p90_ms
    assert m.energy_mj > 0
    assert m.energy_method.startswith(("measured:", "estimated:"))
    assert m.latency_runtime == "onnxruntime" and m.latency_method.startswith("onnxruntime ")
    assert m.size_method.startswith("bytes of the ONNX file")
    assert m.latency_ratio is None  # no baseline to time against
    assert M.Measurement.from_dict(m.to_dict()) == m
    assert m.values(["accuracy", "size_bytes"]) == [m.accuracy, float(m.size_bytes)]
    # every registered figure is measured, with every detail it declares
    assert set(m.figures) == set(FIGURES)
    assert {d for f in FIGURES.values() for d in f.details} <= set(m.details)
    assert m.memory_method.startswith("weights as held in memory")


def test_the_torchscript_runtime_measures_traced_and_frozen_torchscript():
    m = M.measure(
        small_net(),
        torch.randn(16, 1, 8, 8),
        torch.randint(0, 10, (16,)),
        example_input=X,
        warmup=2,
        repeats=10,
        energy_seconds=0.05,
        runtime="torchscript",
    )
    assert m.latency_runtime == "torchscript" and "trace+freeze" in m.latency_method
    assert m.size_method.startswith("bytes of torch.save")


def test_every_runtime_gives_the_eager_models_outputs():
    net = small_net().eval()
    x = torch.randn(5, 1, 8, 8)
    for runtime in M.RUNTIMES:
        if runtime == "openvino":
            pytest.importorskip("openvino")
        torch.testing.assert_close(M.deploy(net, runtime, X)(x), net(x), atol=1e-5, rtol=1e-4)


def _hand_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Conv and linear multiply-accumulates summed by hand from each layer's output shape."""
    total = 0

    def hook(m, _i, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name, torchvision_gmacs", [("resnet18", 1.81), ("mobilenet_v2", 0.30)])
def test_macs_at_224px_are_the_hand_summed_conv_and_linear_macs(name, torchvision_gmacs):
    import torchvision

    model = getattr(torchvision.models, name)(num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224)
    total, macs = M.count_flops(model, x)
    assert macs == _hand_macs(model, x)
    assert macs / 1e9 == pytest.approx(torchvision_gmacs, abs=0.005)  # torchvision's model table
    # batch-norm is folded as in the deployed graph: the unfolded count is larger
    unfolded, unfolded_macs = M.count_flops(model, x, fold=False)
    assert unfolded_macs == macs and unfolded > total


def test_the_median_interval_has_the_sign_tests_coverage():
    lo, hi, coverage = M.median_interval(list(range(1, 11)))
    assert (lo, hi) == (2, 9) and coverage == pytest.approx(1 - 2 * 11 / 1024)
    lo, hi, coverage = M.median_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == (1.0, 3.0) and coverage == pytest.approx(0.75)


def test_identical_models_under_cpu_load_time_as_equal():
    """Two copies of one model, timed interleaved while other processes load every core: the
    ratio's interval holds 1 (a load that comes and goes moves both)."""
    import multiprocessing as mp

    net = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1) for _ in range(6)]).eval()
    x = torch.randn(1, 8, 32, 32)
    a, b = M.deploy(net, "onnxruntime", x), M.deploy(net, "onnxruntime", x)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    burners = [ctx.Process(target=_burn, args=(stop,), daemon=True) for _ in range(2 * (os.cpu_count() or 1))]
    for p in burners:
        p.start()
    try:
        p = M.paired_latency(a, b, x, warmup=10, repeats=200)
    finally:
        stop.set()
        for proc in burners:
            proc.join(timeout=30)
    assert p["ratio_lo"] <= 1.0 <= p["ratio_hi"] or abs(p["ratio"] - 1) < 0.1, p


def _burn(stop) -> None:
    n = 0
    while not stop.is_set():
        n = (n * 31 + 7) % 1000003


def test_peak_memory_is_the_weights_plus_the_largest_live_activations():
    # Linear(4, 8) -> ReLU -> Linear(8, 2) at batch 1, float32:
    #   weights 4*8 + 8 + 8*2 + 2 = 58 values = 232 bytes
    #   activations: the input (16 B) and the first output (32 B) are still alive while ReLU
    #   writes its own output (32 B): 80 B at the peak; the second Linear's 8 B come after the
    #   first output is released (48 B live then, 56 B with it)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(1, 4)
    assert M.peak_activation_bytes(net, x) == 80
    assert M.weight_bytes(net) == 232
    assert M.peak_memory_bytes(net, x) == 232 + 80
    # an in-place ReLU writes into the first output's storage: the peak is input + both outputs
    inplace = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    assert M.peak_activation_bytes(inplace, x) == 16 + 32 + 8
    # on int8 kernels: 58 weight values... of which the two weight matrices (48) are 1 byte each
    assert M.weight_bytes(net, weight_bits=8) == 48 + 4 * (8 + 2)
    assert M.peak_memory_bytes(net, x, weight_bits=8) == 48 + 40 + 80 // 4


def test_a_residual_branch_keeps_its_input_alive():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x):
            return x + self.b(torch.relu(self.a(x)))

    # x (64 B) stays alive to the add; a(x), relu, b(.) each 64 B: x + a + relu = 192 at relu,
    # then a(x) is released; x + relu + b = 192; the sum: x + b + sum = 192 (relu released)
    assert M.peak_activation_bytes(Residual(), torch.randn(1, 16)) == 192


def test_energy_is_measured_where_rapl_is_readable(monkeypatch, tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("1000000\n")
    monkeypatch.setattr(energy.glob, "glob", lambda _pattern: [str(zone)])
    reads = iter([1000, 6000])  # 5000 uJ over the runs
    monkeypatch.setattr(energy, "_read_uj", lambda _c: [next(reads)])
    monkeypatch.setattr(energy, "_run_for", lambda _fn, _x, _s: 10)
    e, method = M.measured_energy_mj(lambda x: x, X, device="cpu")
    assert e == pytest.approx(0.5)  # 5000 uJ / 10 runs = 0.5 mJ
    assert method.startswith("measured: RAPL")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20_000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_the_accuracy_interval_is_scipys_clopper_pearson(n_and_k):
    from scipy.stats import binomtest

    from tradeoff.search.trial.measure.accuracy import binomial_interval

    n, k = n_and_k
    exact = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    lo, hi = binomial_interval(k, n)
    assert lo == pytest.approx(exact.low, abs=1e-9) and hi == pytest.approx(exact.high, abs=1e-9)
    assert lo <= k / n <= hi
