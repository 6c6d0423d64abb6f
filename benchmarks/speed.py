"""Where a trial's time goes, how steady a latency measurement is, and how much of the
theoretical saving the CPU delivers.

    python benchmarks/speed.py            # resnet18 on digits: 8 live trials, CV, realised speed-up
    python benchmarks/speed.py --quick    # tiny_resnet, 2 trials, 5 repeats: a smoke run

1. Breakdown: live trials through the runner (plans from a Latin hypercube over the default
   space), each step timed: teacher copy, each knob, fine-tuning/distillation, and each
   measurement (FLOP count, size, trace+freeze, accuracy, latency, energy). Medians.
2. Latency steadiness: the coefficient of variation (stdev / mean) of `latency_ms` (itself the
   median of 50 runs) over 10 repeated measurements of the same model, with the other core idle
   and with it busy (a second process spinning on one core).
3. Realised speed-up: for the Pareto-optimal plans of the tabular benchmark, the latency ratio to
   the baseline against the FLOP ratio, and latency against the hardware limit: 2 x MACs divided
   by this CPU's peak, measured as the best of 20 large matrix products (fp32: torch.mm 2048^3;
   int8: PyTorch's quantized linear, fbgemm, 2048 x 2048 x 2048) at the same thread count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
from tabular import HERE, TABLE, key, load

from tradeoff.search.trial.measure import cpu_name, deploy, latency
from tradeoff.search.views.cost import dominates
from tradeoff.spaces import Plan, default_space, space_filling_plans
from tradeoff.spaces.runtimes import PYTORCH_RUNTIME


def breakdown(runner, n: int, seed: int = 3) -> list[str]:
    plans = space_filling_plans(default_space(), n, seed=seed)
    rows = []
    for plan in plans:
        t0 = time.perf_counter()
        compressed, times = runner.build(plan)
        measure_times: dict[str, float] = {}
        t1 = time.perf_counter()
        runner.measure(compressed, measure_times)
        times["measure_s"] = time.perf_counter() - t1
        times.update({f"measure_{k}": v for k, v in measure_times.items()})
        times["total_s"] = time.perf_counter() - t0
        rows.append(times)
        print(f"  trial {len(rows)}/{len(plans)}: {times['total_s']:.1f} s", file=sys.stderr)
    names = sorted({k for r in rows for k in r}, key=lambda k: (not k.startswith("step"), k))
    total = statistics.median(r["total_s"] for r in rows)
    out = [
        f"{len(rows)} live trials ({runner.task.model_name} on {runner.task.name}, default settings, plans from a "
        f"Latin hypercube over the default space), {torch.get_num_threads()} threads. Median seconds per "
        "step (a step a plan does not take counts 0):",
        "",
        "| step | median s | mean share of the trial |",
        "| --- | --- | --- |",
    ]
    for name in names:
        if name == "total_s":
            continue
        values = [r.get(name, 0.0) for r in rows]
        share = statistics.mean(r.get(name, 0.0) / r["total_s"] for r in rows)
        out.append(f"| {name.removesuffix('_s')} | {statistics.median(values):.3f} | {share:.1%} |")
    out.append(f"| **whole trial** | **{total:.2f}** | 100% |")
    return out


def _spinner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def steadiness(runner, repeats: int, n_runs: int) -> list[str]:
    base = deploy(runner.teacher, PYTORCH_RUNTIME, runner.task.example_input)
    compressed, _ = runner.build(Plan(prune_ratio=0.5, weight_bits=8))
    small = deploy(compressed.model, PYTORCH_RUNTIME, runner.task.example_input)
    out = [
        f"`latency_ms` (median of {n_runs} runs after 10 warm-up) measured {repeats} times in a row, "
        f"{torch.get_num_threads()} threads:",
        "",
        "| model | other core | mean ms | CV |",
        "| --- | --- | --- | --- |",
    ]
    for label, model in (("baseline", base), ("prune 0.5 + int8", small)):
        for busy in (False, True):
            spinner = _spinner() if busy else None
            try:
                time.sleep(0.5 if busy else 0)
                values = [
                    latency(model, runner.task.example_input, warmup=10, repeats=n_runs)[0]
                    for _ in range(repeats)
                ]
            finally:
                if spinner:
                    spinner.kill()
                    spinner.wait()
            mean = statistics.mean(values)
            cv = statistics.stdev(values) / mean if len(values) > 1 else 0.0
            out.append(f"| {label} | {'busy' if busy else 'idle'} | {mean:.3f} | {cv:.1%} |")
    return out


@torch.no_grad()
def peak_flops(threads: int) -> tuple[float, float]:
    """(fp32, int8) multiply-add throughput in FLOP/s (2 per multiply-add), best of 20."""
    torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(20):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    fp32 = 2 * n**3 / best
    torch.backends.quantized.engine = "x86"
    qx = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 64, torch.quint8)
    qw = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(qw, None)
    best = float("inf")
    for _ in range(20):
        t = time.perf_counter()
        torch.ops.quantized.linear(qx, packed, 0.1, 64)
        best = min(best, time.perf_counter() - t)
    return fp32, 2 * n**3 / best


def realised(table: dict, threads: int) -> list[str]:
    base = table["baseline"]
    rows = table["rows"]
    objectives = ("accuracy", "size_bytes", "latency_ms", "energy_mj")
    directions = ["maximize", "minimize", "minimize", "minimize"]
    vecs = [[r["figures"][o] for o in objectives] for r in rows]
    front = [r for r, v in zip(rows, vecs) if not any(dominates(w, v, directions) for w in vecs)]
    front = [r for r in front if r["figures"]["accuracy"] >= base["accuracy"] - 0.05]
    front.sort(key=lambda r: r["figures"]["latency_ms"])
    fp32, int8 = peak_flops(threads)
    out = [
        f"Peak measured on this CPU ({cpu_name()}, {threads} threads): fp32 {fp32 / 1e9:.0f} GFLOP/s "
        f"(torch.mm 2048^3), int8 {int8 / 1e9:.0f} GOP/s (quantized linear 2048^3). Hardware limit of a "
        "model = 2 x its multiply-adds / the peak of its arithmetic (fvcore's flops count one "
        "multiply-add as one flop). The tabular benchmark's Pareto-optimal plans within 5 points "
        "of the baseline:",
        "",
        "| plan (width/prune/rank/bits) | accuracy | FLOPs ratio | latency ratio | realised / theoretical speed-up "
        "| latency ms | hardware limit ms | latency / limit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in [{"plan": Plan().params(), "figures": base}, *front]:
        f = r["figures"]
        flops_ratio = f["flops"] / base["flops"]
        lat_ratio = f["latency_ms"] / base["latency_ms"]
        peak = int8 if r["plan"]["weight_bits"] <= 8 else fp32
        limit_ms = 2 * f["flops"] / peak * 1e3
        out.append(
            f"| {key(r['plan']).replace('|', '/')} | {f['accuracy']:.2%} | {flops_ratio:.3f} | {lat_ratio:.3f} | "
            f"{(1 / lat_ratio) / (1 / flops_ratio):.2f} | {f['latency_ms']:.3f} | {limit_ms:.4f} | "
            f"{f['latency_ms'] / limit_ms:.0f}x |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int)
    a = ap.parse_args()
    from tabular import setup

    threads = os.cpu_count() or 1
    _, _, runner = setup("tiny_resnet" if a.quick else "resnet18")
    out = [f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}.", ""]
    out += ["### Where a trial's time goes", "", *breakdown(runner, a.trials or (2 if a.quick else 8)), ""]
    out += [
        "### Latency steadiness",
        "",
        *steadiness(runner, 3 if a.quick else 10, 10 if a.quick else 50),
        "",
    ]
    table_path = os.path.join(HERE, "results", "quick_grid.json") if a.quick else TABLE
    if os.path.exists(table_path):
        out += ["### Realised speed-up", "", *realised(load(table_path), threads)]
    text = "\n".join(out)
    print(text)
    with open(os.path.join(HERE, "results", "speed-quick.md" if a.quick else "speed.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
