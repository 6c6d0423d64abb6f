"""Latency of a study's front structures, fp32 and int8, in ONNX Runtime, timed in one run.

    python benchmarks/front_latency.py --dir DIR --study-name NAME [--out FILE]
    python benchmarks/front_latency.py --quick     # a 6-plan tiny_resnet search on digits, then the same

DIR is where the study's `tradeoff search` ran (its `tradeoff.db` and `tradeoff-artifacts/`, as
`benchmarks/depth.py --dir` leaves them). For every distinct structure of the study's front (the
structural knobs' values: students, dropped blocks, pruning, low-rank; bit-widths set aside):
its fine-tuned float model (the study's kept weights, as `tradeoff export` restores them; a
structure whose weights were not kept is fine-tuned again), deployed in fp32 and quantized to
int8 by ONNX Runtime's `quantize_static` (QDQ, per-channel weights, calibrated on 512 training
images), and the teacher the same way. Every cell is timed in rotating rounds (as
`benchmarks/runtimes.py` does: each round runs a block of calls of every cell, the order shifted
by one cell per round, so that every cell sees the same background load), batch 1, at the
study's thread count, with ONNX Runtime's spin-waiting between calls turned off (the idle
sessions' threads would spin beside the timed one and slow it 2x; one session alone, spinning,
runs the teacher about 25 % faster than these figures), denormals flushed; a cell's figure is the median of all its calls, and its
spread the interquartile range of its per-round medians.

Reported per structure: MACs (fvcore), fp32 and int8 milliseconds, the int8 speed-up (fp32 /
int8) and the realised fraction of the MAC ratio in fp32 (teacher ms / structure ms, divided by
teacher MACs / structure MACs; 1 = latency falls as fast as the MACs). Issue 28's target: int8
>= 1.5x faster than fp32 on front structures above 1 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from allocation import run  # beside this script
from cheaper import QUICK
from runtimes import int8

from tradeoff.search.commands import load_study
from tradeoff.search.study.records import FACTS_ATTR, PLAN_ATTR
from tradeoff.search.study.sensitivity import load_sensitivity
from tradeoff.search.task.tasks import task_for
from tradeoff.search.task.teacher import ensure_teacher
from tradeoff.search.trial.kept import KeptModels
from tradeoff.search.trial.measure import count_flops, cpu_name, deploy
from tradeoff.search.trial.runner import Runner
from tradeoff.search.views.report import front
from tradeoff.spaces import KNOBS, format_plan, structure_key
from tradeoff.spaces.runtimes import version
from tradeoff.spaces.runtimes.onnx_runtime import stop_spinning
from tradeoff.storage import open_artifact_store

RUNTIME = "onnxruntime"


def quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], q[2]


@torch.no_grad()
def time_rounds(cells: dict, x: torch.Tensor, *, rounds: int, block: int) -> dict:
    """{key: (median ms of every call, (q1, q3) of the per-round medians)}."""
    keys = list(cells)
    calls = {k: [] for k in keys}
    per_round = {k: [] for k in keys}
    for k in keys:  # warm-up: sessions start, caches fill
        for _ in range(5):
            cells[k](x)
    for r in range(rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            got = []
            for _ in range(block):
                t0 = time.perf_counter()
                cells[k](x)
                got.append((time.perf_counter() - t0) * 1e3)
            calls[k] += got
            per_round[k].append(statistics.median(got))
    return {k: (statistics.median(calls[k]), quartiles(per_round[k])) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", help="where the study's search ran (tradeoff.db, tradeoff-artifacts/)")
    ap.add_argument("--study-name")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="search 6 tiny_resnet plans first, time 3 rounds")
    ap.add_argument("--out", help="markdown file to write")
    args = ap.parse_args()
    if args.quick:
        args.dir, args.study_name, args.rounds, args.block = (
            tempfile.mkdtemp(prefix="tradeoff-fl-"),
            "quick",
            3,
            3,
        )
        env = dict(os.environ, TRADEOFF_RUN_DIR=os.path.join(args.dir, "run"))
        run("quick", "allocated", 0, args.dir, env, list(QUICK), 6)
    elif not (args.dir and args.study_name):
        ap.error("give --dir and --study-name (or --quick)")
    torch.set_flush_denormal(True)
    t_start = time.perf_counter()
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    url = f"sqlite:///{os.path.abspath(os.path.join(args.dir, 'tradeoff.db'))}"
    study, config = load_study(url, args.study_name)
    on_front = front(study)
    # the thread count the study's latencies were measured with (recorded with every trial)
    threads = next(
        (t.user_attrs["latency_threads"] for t in on_front if t.user_attrs.get("latency_threads")), 1
    )
    torch.set_num_threads(threads)
    stop_spinning()  # dozens of sessions side by side: idle ones must not spin beside the timed one
    task = task_for(config)
    store = open_artifact_store(os.path.join(args.dir, "tradeoff-artifacts"))
    teacher = ensure_teacher(study, task, store, train=False, log=say)
    runner = Runner(
        config,
        task,
        teacher,
        kept=KeptModels(store, keep=config.keep_models),
        table=load_sensitivity(study, store),
    )
    x = task.example_input
    calib = tuple(task.train.x[:512].split(64))
    structures: dict[str, tuple[str, torch.nn.Module]] = {"teacher": ("teacher (the baseline)", teacher)}
    trials_of: dict[str, list[int]] = {"teacher": []}
    for t in on_front:
        plan = runner.plan_of(t.params)
        key = structure_key(plan)
        if key in structures:
            trials_of[key].append(t.number)
            continue
        compressed, _, how = runner.restore(study, t)
        float_model = compressed.float_model
        if float_model is None or float_model is teacher:
            trials_of["teacher"].append(t.number)
            continue
        stored = t.user_attrs.get(PLAN_ATTR) or {}  # the structure in words: bit-widths set aside
        facts = t.user_attrs.get(FACTS_ATTR)
        words = format_plan({k: v for k, v in stored.items() if k not in KNOBS or KNOBS[k].structural}, facts)
        say(f"#{t.number}: {how}")
        structures[key] = (words, float_model.eval())
        trials_of[key] = [t.number]
    cells, macs = {}, {}
    for key, (_, model) in structures.items():
        macs[key] = count_flops(model, x)[1]
        cells[(key, "fp32")] = deploy(model, RUNTIME, x)
        cells[(key, "int8")] = deploy(int8(model, x, calib, RUNTIME), RUNTIME, x)
    say(f"{len(structures)} structures (with the teacher), {len(cells)} cells; timing ...")
    got = time_rounds(cells, x, rounds=args.rounds, block=args.block)
    seconds = time.perf_counter() - t_start
    base_ms, base_macs = got[("teacher", "fp32")][0], macs["teacher"]
    rows, speedups = [], []
    order = sorted(structures, key=lambda k: -macs[k])
    for key in order:
        words, _ = structures[key]
        fp, (fq1, fq3) = got[(key, "fp32")]
        q, (qq1, qq3) = got[(key, "int8")]
        realised = (base_ms / fp) / (base_macs / macs[key]) if key != "teacher" else 1.0
        if fp > 1.0:
            speedups.append(fp / q)
        trials = ", ".join(f"#{n}" for n in trials_of[key]) or "-"
        rows.append(
            f"| {words} | {trials} | {macs[key] / 1e6:.1f} | {fp:.3f} ({fq1:.3f}-{fq3:.3f}) | "
            f"{q:.3f} ({qq1:.3f}-{qq3:.3f}) | {fp / q:.2f}x | {base_macs / macs[key]:.1f}x | {realised:.2f} |"
        )
    above = [k for k in order if got[(k, "fp32")][0] > 1.0]
    lines = [
        f"### Front structures of study `{args.study_name}` ({config.task}), fp32 and int8 in ONNX Runtime",
        "",
        f"`python benchmarks/front_latency.py --dir DIR --study-name {args.study_name}`: {cpu_name()}, "
        f"{version(RUNTIME)}, torch {torch.__version__}, {threads} thread(s), batch 1, denormals flushed; "
        f"{args.rounds} rounds of {args.block} calls per cell in rotating order, all cells in one run "
        f"({seconds:.0f} s). Median ms of all calls (interquartile range of the per-round medians).",
        "",
        "| structure | front trials | MACs (M) | fp32 ms | int8 ms | int8 speed-up | MAC ratio | realised fraction (fp32) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        (
            f"int8 speed-up on the {len(speedups)} structures above 1 ms in fp32: median "
            f"**{statistics.median(speedups):.2f}x** (range {min(speedups):.2f}-{max(speedups):.2f}; "
            "target >= 1.5x)."
            if speedups
            else "No front structure runs above 1 ms in fp32."
        ),
        f"Structures above 1 ms: {len(above)} of {len(order)} (the teacher included).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
