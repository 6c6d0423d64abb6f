"""Latency of the same networks in every runtime, fp32 and int8, measured in one run.

    python benchmarks/runtimes.py            # 5 networks x fp32/int8 x 3 runtimes x batch 1/32 x 1/2 threads
    python benchmarks/runtimes.py --quick    # tiny_resnet structures only, batch 1, 1 thread: a smoke run

Networks: the bundled teacher (resnet18 on 8x8 digits, trained and cached as `tradeoff search`
does), two plans of it (prune_ratio=0.5, student_width=0.25; not fine-tuned: latency does not
depend on the weights' values), and torchvision's resnet18 and mobilenet_v2 at 224 px (random
weights: no download). int8 is each runtime's own: ONNX Runtime's quantize_static (QDQ,
unsigned activations, per-channel weights; OpenVINO runs the same file) and PyTorch's FX
static quantization (x86/fbgemm) for TorchScript, all calibrated on 512 training images (random
images for the 224-px networks).

Every cell is timed in rounds: in each round every (network, precision, runtime) cell runs a
block of calls, the order rotating by one cell per round, so that every cell sees the same
background load. A cell's figure is the median of all its calls. Writes
benchmarks/results/runtimes.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from tradeoff.search.task.tasks import get_task
from tradeoff.search.task.teacher import train_teacher
from tradeoff.search.trial.measure import accuracy, count_flops, cpu_name, deploy
from tradeoff.spaces import ApplyContext, Plan, apply_plan
from tradeoff.spaces.runtimes import RUNTIMES as REGISTERED
from tradeoff.spaces.runtimes import available, version
from tradeoff.spaces.runtimes.onnx import OnnxRuntimeBase

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIMES = tuple(REGISTERED)


def structures(quick: bool):
    """(name, float model, example input, calibration batches, validation split or None)."""
    task = get_task("digits", "tiny_resnet" if quick else "resnet18")
    teacher, _, _ = train_teacher(task, log=lambda m: print(m, file=sys.stderr))
    calib = tuple(task.train.x[:512].split(64))
    ctx = ApplyContext(example_input=task.example_input, num_classes=task.num_classes)
    out = [(f"teacher ({task.model_name}, digits 8x8)", teacher, task.example_input, calib, task.val)]
    for label, plan in (
        ("prune_ratio=0.5", Plan(prune_ratio=0.5)),
        ("student_width=0.25", Plan(student_width=0.25)),
    ):
        torch.manual_seed(0)
        out.append(
            (f"teacher, {label}", apply_plan(teacher, plan, ctx).model, task.example_input, calib, None)
        )
    if not quick:
        import torchvision

        x = torch.randn(1, 3, 224, 224)
        gen = torch.Generator().manual_seed(0)
        images = tuple(torch.randn(16, 3, 224, 224, generator=gen) for _ in range(4))
        for name in ("resnet18", "mobilenet_v2"):
            torch.manual_seed(0)
            model = getattr(torchvision.models, name)(num_classes=1000).eval()
            out.append((f"{name} 224 px", model, x, images, None))
    return out


def int8(model, x, calib, runtime: str):
    ctx = ApplyContext(example_input=x, num_classes=0, calibration=calib, runtime=runtime)
    return apply_plan(model, Plan(weight_bits=8), ctx).model


def deployed_cells(nets, runtimes, threads: int):
    """{(net, precision, runtime): callable} with sessions made for ``threads`` threads."""
    torch.set_num_threads(threads)
    cells = {}
    for name, model, x, calib, _ in nets:
        q_onnx = None  # the ONNX runtimes run one int8 file, made once by ONNX Runtime's tool
        for runtime in runtimes:
            cells[(name, "fp32", runtime)] = deploy(model, runtime, x)
            if isinstance(REGISTERED[runtime], OnnxRuntimeBase):
                q_onnx = q_onnx if q_onnx is not None else int8(model, x, calib, runtime)
                cells[(name, "int8", runtime)] = deploy(q_onnx, runtime, x)
            else:
                cells[(name, "int8", runtime)] = deploy(int8(model, x, calib, runtime), runtime, x)
    return cells


@torch.no_grad()
def time_cells(cells, inputs, *, rounds: int, block: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    keys = list(cells)
    times = {k: [] for k in keys}
    for k in keys:  # warm-up: sessions start, caches fill
        for _ in range(3):
            cells[k](inputs[k[0]])
    for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
            fn, x = cells[k], inputs[k[0]]
            for _ in range(block):
                t0 = time.perf_counter()
                fn(x)
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out_path = a.out or os.path.join(HERE, "results", "runtimes-quick.md" if a.quick else "runtimes.md")
    torch.set_flush_denormal(True)
    t_start = time.perf_counter()
    nets = structures(a.quick)
    runtimes = [r for r in RUNTIMES if available(r) is None]
    macs = {name: count_flops(model, x)[1] for name, model, x, _, _ in nets}
    settings = [(1, 1)] if a.quick else [(1, 1), (1, 2), (32, 1), (32, 2)]  # (batch, threads)
    results: dict = {}
    acc_rows = []
    for threads in sorted({t for _, t in settings}):
        cells = deployed_cells(nets, runtimes, threads)
        if threads == 1:  # top-1 of the trained teacher in each runtime and precision
            name, _, _, _, val = nets[0]
            for (net, prec, rt), fn in cells.items():
                if net == name:
                    acc_rows.append((prec, rt, accuracy(fn, val.x, val.y)))
        for batch in sorted({b for b, t in settings if t == threads}):
            inputs = {
                name: x.expand(batch, *x.shape[1:]).contiguous()
                for name, x in ((n, x) for n, _, x, _, _ in nets)
            }
            big = batch > 1
            rounds = 3 if a.quick else (5 if big else 12)
            got = time_cells(cells, inputs, rounds=rounds, block=1 if big else 5, threads=threads)
            for k, v in got.items():
                results[(*k, batch, threads)] = v
            print(f"batch {batch}, {threads} threads: {len(got)} cells timed", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t_start
    write(out_path, nets, runtimes, settings, results, macs, acc_rows, seconds, a.quick)
    print(open(out_path).read())


def write(path, nets, runtimes, settings, results, macs, acc_rows, seconds, quick) -> None:
    lines = [
        "# Latency in every runtime, fp32 and int8",
        "",
        f"`python benchmarks/runtimes.py{' --quick' if quick else ''}`: {cpu_name()}, "
        f"{', '.join(version(r) for r in runtimes)}, torch {torch.__version__}; {seconds:.0f} s. "
        "Median milliseconds per call (a batch-32 call runs 32 images), all cells timed in one run "
        "in rotating order; denormals flushed.",
        "",
    ]
    cols = [(rt, b, t) for rt in runtimes for b, t in settings]
    lines.append(
        "| network | MACs (M) | precision | " + " | ".join(f"{rt} b{b} t{t}" for rt, b, t in cols) + " |"
    )
    lines.append("| --- | --- | --- | " + " | ".join("---" for _ in cols) + " |")
    for name, *_ in nets:
        for prec in ("fp32", "int8"):
            cells = [f"{results[(name, prec, rt, b, t)]:.3f}" for rt, b, t in cols]
            lines.append(f"| {name} | {macs[name] / 1e6:.1f} | {prec} | " + " | ".join(cells) + " |")
    lines += ["", "**int8 speed-up** (fp32 time / int8 time, same runtime and setting):", ""]
    lines.append("| network | " + " | ".join(f"{rt} b{b} t{t}" for rt, b, t in cols) + " |")
    lines.append("| --- | " + " | ".join("---" for _ in cols) + " |")
    for name, *_ in nets:
        ratios = [results[(name, "fp32", rt, b, t)] / results[(name, "int8", rt, b, t)] for rt, b, t in cols]
        lines.append(f"| {name} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    teacher = nets[0][0]
    plans = [n for n, *_ in nets[1:3]]
    lines += [
        "",
        "**Realised fraction of the MAC ratio** (the plan's speed-up over the teacher in the same "
        "runtime, precision and setting, divided by teacher MACs / plan MACs; 1 = latency falls as "
        "fast as the MACs):",
        "",
        "| plan | MAC ratio | precision | " + " | ".join(f"{rt} b{b} t{t}" for rt, b, t in cols) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for plan in plans:
        mac_ratio = macs[teacher] / macs[plan]
        for prec in ("fp32", "int8"):
            fr = [
                results[(teacher, prec, rt, b, t)] / results[(plan, prec, rt, b, t)] / mac_ratio
                for rt, b, t in cols
            ]
            lines.append(
                f"| {plan} | {mac_ratio:.2f}x | {prec} | " + " | ".join(f"{f:.2f}" for f in fr) + " |"
            )
    lines += ["", f"**Top-1 of the trained teacher on the validation split** ({teacher}, 1 thread):", ""]
    lines += ["| precision | runtime | top-1 |", "| --- | --- | --- |"]
    lines += [f"| {p} | {rt} | {acc:.2%} |" for p, rt, acc in acc_rows]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
