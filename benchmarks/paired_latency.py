"""Does ONNX Runtime's spin-waiting bias the trial runner's paired latency ratio?

    python benchmarks/paired_latency.py --dir DIR --study-name NAME --trials 183 42 111

For each named front trial of a searched study (its structure restored from the kept weights, in
fp32) and the teacher: each timed alone (blocks of 100 calls, one session at a time, a pause
between) and paired as the runner times a trial (blocks of 5 calls, the order alternating, 40
rounds, the median per-round ratio), first with ONNX Runtime's default spin-waiting, then with
it turned off (`stop_spinning`). Batch 1, 2 threads, denormals flushed. Prints one line per
trial and setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from tradeoff.search.commands import load_study
from tradeoff.search.study.sensitivity import load_sensitivity
from tradeoff.search.task.tasks import task_for
from tradeoff.search.task.teacher import ensure_teacher
from tradeoff.search.trial.kept import KeptModels
from tradeoff.search.trial.measure import cpu_name, deploy
from tradeoff.search.trial.runner import Runner
from tradeoff.search.views.report import front
from tradeoff.spaces.runtimes.onnx_runtime import stop_spinning
from tradeoff.storage import open_artifact_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--study-name", required=True)
    ap.add_argument("--trials", type=int, nargs="+", required=True)
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(2)
    study, config = load_study(
        f"sqlite:///{os.path.abspath(os.path.join(args.dir, 'tradeoff.db'))}", args.study_name
    )
    task = task_for(config)
    store = open_artifact_store(os.path.join(args.dir, "tradeoff-artifacts"))
    teacher = ensure_teacher(study, task, store, train=False, log=lambda m: None)
    kept = KeptModels(store, keep=config.keep_models)
    runner = Runner(config, task, teacher, kept=kept, table=load_sensitivity(study, store))
    x = task.example_input
    picks = [t for t in front(study) if t.number in args.trials]
    plans = {t.number: runner.restore(study, t)[0].float_model for t in picks}

    def block(fn, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn(x)
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    print(f"{cpu_name()}, 2 threads, batch 1, study {args.study_name}", flush=True)
    for spinning in (True, False):
        if not spinning:
            stop_spinning()
        teacher_fn = deploy(teacher, "onnxruntime", x)
        for number, model in plans.items():
            plan_fn = deploy(model, "onnxruntime", x)
            block(teacher_fn, 20)
            block(plan_fn, 20)
            alone_t, alone_p = [], []
            for _ in range(5):
                alone_t += block(teacher_fn, 100)
                time.sleep(0.2)
                alone_p += block(plan_fn, 100)
                time.sleep(0.2)
            ratios = []
            for r in range(40):  # the runner's scheme: blocks of 5, the order alternating
                first, second = (teacher_fn, plan_fn) if r % 2 == 0 else (plan_fn, teacher_fn)
                a, b = statistics.median(block(first, 5)), statistics.median(block(second, 5))
                ratios.append(b / a if first is teacher_fn else a / b)
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            t_ms, p_ms = statistics.median(alone_t), statistics.median(alone_p)
            print(
                f"spinning {'on ' if spinning else 'off'} #{number}: alone teacher {t_ms:.3f} ms, plan "
                f"{p_ms:.3f} ms, ratio {p_ms / t_ms:.3f}; paired ratio {statistics.median(ratios):.3f} "
                f"(IQR {q1:.3f}-{q3:.3f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
