"""The real task: Fashion-MNIST (Debian's dataset-fashion-mnist), in three parts that resume.

    python benchmarks/fashion.py                    # every part not yet done, then the report
    python benchmarks/fashion.py teacher            # one part (stems, teacher, search, final, report)
    python benchmarks/fashion.py search --n-trials 20 --redo

stems: what one training epoch costs with the CIFAR stem, the strided one and the pooled one, float32
  and bf16.
teacher: trains (or loads from the cache) the task's resnet18 teacher as `tradeoff search`
  does, and records its validation and test accuracy with their 95 % intervals and the training
  time (only when it trained here: a cached teacher keeps the figure of the run that trained it).
search: a fresh `tradeoff search --task fashion-mnist` study (SQLite, default space and sampler)
  of --n-trials plans; records trial times, the front, and the skeptic's check: does any
  search-time student beat the teacher beyond the 95 % interval of the difference?
final: `tradeoff export --front --finetune-steps N` of that study: both accuracies of every
  front plan and the rank correlation of search-time validation accuracy with final test accuracy.

Each finished part is written to benchmarks/results/fashion-<part>.json (a part already there is
skipped unless --redo; `--tag T`: fashion-<part>-T.json, another machine's figures kept beside the
recorded ones) and the report to benchmarks/results/fashion.md. The study and exports lie
under benchmarks/work/fashion/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import optuna
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
WORK = os.path.join(HERE, "work", "fashion")
PARTS = ("stems", "teacher", "search", "final")
STEM_WORDS = {
    "small": "3x3 stride-1 stem without max-pool",
    "strided": "7x7 stride-2 stem without max-pool",
    "pooled": "3x3 stride-1 stem with a 2x2 max-pool",
}


def _path(part: str, tag: str = "") -> str:
    return os.path.join(RESULTS, f"fashion-{part}{'-' + tag if tag else ''}.json")


def machine() -> dict:
    from tradeoff.search.task.training import bf16_supported
    from tradeoff.search.trial.measure import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "bf16": bf16_supported(),
    }


def part_stems(args) -> dict:
    """What one epoch of the 55,000 training images costs per resnet18 stem and precision:
    the median of 4 timed SGD steps of batch 128 (after one warm-up), times the steps."""
    from torch import nn

    from tradeoff.search.task.models import model_builder

    torch.set_num_threads(os.cpu_count() or 1)
    out: dict = {"machine": machine(), "method": "median of 4 SGD steps, batch 128, after 1 warm-up"}
    for stem in ("small", "strided", "pooled"):
        for bf16 in (False, True):
            model = model_builder("resnet18", 1, 28, 10, stem=stem)().train()
            x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
            if bf16:
                model, x = (
                    model.to(memory_format=torch.channels_last),
                    x.contiguous(memory_format=torch.channels_last),
                )
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t)
            step = statistics.median(times[1:])
            out[f"{stem}_{'bf16' if bf16 else 'fp32'}_min_per_epoch"] = round(step * 55000 / 128 / 60, 2)
            print(stem, bf16, out[f"{stem}_{'bf16' if bf16 else 'fp32'}_min_per_epoch"], file=sys.stderr)
    return out


def part_teacher(args) -> dict:
    from tradeoff.search.task.tasks import get_task
    from tradeoff.search.task.teacher import train_teacher
    from tradeoff.search.trial.measure import accuracy
    from tradeoff.search.trial.measure.accuracy import binomial_interval

    torch.set_num_threads(os.cpu_count() or 1)
    torch.set_flush_denormal(True)
    task = get_task("fashion-mnist", "resnet18")
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
        lines.append(msg)

    model, path, seconds = train_teacher(task, log=log)
    out = {"machine": machine(), "fingerprint": task.fingerprint(), "epochs": task.teacher_epochs}
    out["stem"] = task.settings["stem"]
    out["recipe"] = task.recipe
    for split in ("val", "test"):
        s = getattr(task, split)
        acc = accuracy(model, s.x, s.y)
        out[f"{split}_accuracy"] = acc
        out[f"{split}_interval"] = binomial_interval(round(acc * len(s)), len(s))
    out["train_seconds"] = round(seconds, 1) if seconds else None
    out["log"] = lines
    out["cached"] = not seconds
    return out


def _tradeoff(*argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tradeoff.search.cli", *argv]
    print("$ tradeoff " + " ".join(argv), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, cwd=WORK, text=True, stdout=subprocess.PIPE)
    if r.returncode != 0:
        raise SystemExit(f"tradeoff {' '.join(argv)} exited {r.returncode}")
    return r


def part_search(args) -> dict:
    from tradeoff.search.study.records import TEACHER_ATTR, baseline_of
    from tradeoff.search.trial.measure.accuracy import differ_beyond_noise
    from tradeoff.search.views.report import front

    os.makedirs(WORK, exist_ok=True)
    for name in ("tradeoff.db",):
        if os.path.exists(os.path.join(WORK, name)):
            os.remove(os.path.join(WORK, name))
    if os.path.isdir(os.path.join(WORK, "tradeoff-artifacts")):
        import shutil

        shutil.rmtree(os.path.join(WORK, "tradeoff-artifacts"))
    t0 = time.perf_counter()
    _tradeoff("search", "--task", "fashion-mnist", "--n-trials", str(args.n_trials))
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{os.path.join(WORK, 'tradeoff.db')}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    fresh = [t for t in done if "duplicate_of" not in t.user_attrs and "sibling_of" not in t.user_attrs]
    trained = [t for t in fresh if t.user_attrs.get("time_finetune_s", 0) > 0]
    base = baseline_of(study)
    teacher = study.user_attrs.get(TEACHER_ATTR, {})
    n_val = 5000
    beats = [
        t.number
        for t in done
        if t.user_attrs["accuracy"] > base["accuracy"]
        and differ_beyond_noise(t.user_attrs["accuracy"], base["accuracy"], n_val)
    ]
    best = max((t for t in done if t.number != base["trial"]), key=lambda t: t.user_attrs["accuracy"])
    return {
        "machine": machine(),
        "command": f"tradeoff search --task fashion-mnist --n-trials {args.n_trials}",
        "wall_seconds": round(wall, 1),
        "trials": len(study.trials),
        "complete": len(done),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
        "median_trial_s": statistics.median(t.user_attrs.get("time_total_s", 0.0) for t in fresh),
        "median_trained_trial_s": statistics.median(t.user_attrs.get("time_total_s", 0.0) for t in trained)
        if trained
        else None,
        "trial_seconds": sorted(round(t.user_attrs.get("time_total_s", 0.0), 1) for t in fresh),
        "teacher": teacher,
        "baseline": {k: base[k] for k in ("accuracy", "size_bytes", "latency_ms")},
        "best_student": {
            "trial": best.number,
            "plan": best.user_attrs.get("plan_text"),
            "accuracy": best.user_attrs["accuracy"],
        },
        "students_beating_teacher_beyond_noise": beats,
        "front": [
            {
                "trial": t.number,
                "plan": t.user_attrs.get("plan_text"),
                "accuracy": t.user_attrs["accuracy"],
                "size_bytes": t.user_attrs["size_bytes"],
                "latency_ms": t.user_attrs["latency_ms"],
            }
            for t in front(study)
        ],
    }


def part_final(args) -> dict:
    out_dir = os.path.join(WORK, "front-export")
    t0 = time.perf_counter()
    extra = ["--force"] if os.path.exists(out_dir) else []
    _tradeoff("export", "--front", "--finetune-steps", str(args.finetune_steps), "-o", out_dir, *extra)
    with open(os.path.join(out_dir, "front.json")) as f:
        summary = json.load(f)
    summary["command"] = f"tradeoff export --front --finetune-steps {args.finetune_steps} -o DIR"
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    summary["machine"] = machine()
    return summary


def _pct(x) -> str:
    return f"{100 * x:.2f} %"


def report() -> str:
    parts = {}
    for p in PARTS:
        if os.path.exists(_path(p)):
            with open(_path(p)) as f:
                parts[p] = json.load(f)
    lines = ["# Fashion-MNIST (Debian's dataset-fashion-mnist): the real task", ""]
    if "stems" in parts:
        st = parts["stems"]
        lines += [
            "## One epoch per stem",
            "",
            f"Command: `python benchmarks/fashion.py stems` ({st['method']}; {st['machine']['cpu']}, "
            f"{st['machine']['cores']} cores): minutes per epoch of 55,000 images: "
            + ", ".join(
                f"{k.removesuffix('_min_per_epoch')} {v}" for k, v in st.items() if k.endswith("_epoch")
            ),
            "",
        ]
    if "teacher" in parts:
        t = parts["teacher"]
        m = t["machine"]
        lines += [
            "## The teacher",
            "",
            f"Command: `python benchmarks/fashion.py teacher`. Machine: {m['cpu']}, {m['cores']} cores, "
            f"torch {m['torch']}, bf16 {'native' if m['bf16'] else 'not available'}.",
            "",
            f"resnet18, {STEM_WORDS[t.get('stem', 'strided')]}, {t['epochs']} epochs, recipe {t['recipe']}: "
            f"validation {_pct(t['val_accuracy'])} ({_pct(t['val_interval'][0])}-{_pct(t['val_interval'][1])}), "
            f"test {_pct(t['test_accuracy'])} ({_pct(t['test_interval'][0])}-{_pct(t['test_interval'][1])}); "
            + (
                f"trained in {t['train_seconds'] / 60:.1f} min."
                if t.get("train_seconds")
                else "from the cache."
            ),
            "",
        ]
    if "search" in parts:
        s = parts["search"]
        lines += [
            "## The search",
            "",
            f"Command: `{s['command']}` (wall {s['wall_seconds'] / 60:.1f} min). {s['complete']} complete, "
            f"{s['pruned']} pruned, {s['failed']} failed of {s['trials']} trials.",
            "",
            f"Median trial {s['median_trial_s']:.1f} s (trained plans: {s['median_trained_trial_s']:.1f} s); "
            f"all: {s['trial_seconds']}.",
            "",
            f"Baseline (the teacher in ONNX Runtime): validation {_pct(s['baseline']['accuracy'])}. Best student: "
            f"#{s['best_student']['trial']} {s['best_student']['plan']} at {_pct(s['best_student']['accuracy'])}; "
            f"students beating the teacher beyond the 95 % interval: {s['students_beating_teacher_beyond_noise'] or 'none'}.",
            "",
            "| trial | plan | accuracy | size | latency |",
            "|---|---|---|---|---|",
        ]
        for r in s["front"]:
            lines.append(
                f"| #{r['trial']} | {r['plan']} | {_pct(r['accuracy'])} | {r['size_bytes'] / 1e3:.1f} kB | "
                f"{r['latency_ms']:.3f} ms |"
            )
        lines.append("")
    if "final" in parts:
        f = parts["final"]
        rho = f["rank_correlation"]
        lines += [
            "## The final fine-tune of the front",
            "",
            f"Command: `{f['command']}` (wall {f['wall_seconds'] / 60:.1f} min).",
            "",
            "| trial | plan | search val | search test | final val | final test (95 % interval) |",
            "|---|---|---|---|---|---|",
        ]
        for r in f["trials"]:
            if r["final"]:
                s_, fi = r["search"], r["final"]
                lines.append(
                    f"| #{r['trial']} | {r['plan']} | {_pct(s_['val_accuracy'])} | {_pct(s_['test_accuracy'])} | "
                    f"{_pct(fi['val_accuracy'])} | {_pct(fi['test_accuracy'])} ({_pct(fi['test_interval'][0])}-"
                    f"{_pct(fi['test_interval'][1])}) |"
                )
            else:
                lines.append(
                    f"| #{r['trial']} | {r['plan']} | | {_pct(r['test_accuracy'])} | (no structure) | |"
                )
        lines += [
            "",
            f"Rank correlation over {rho['plans']} fine-tuned plans ({rho['of']}): Spearman {rho['spearman']}, "
            f"Kendall {rho['kendall']}.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", nargs="?", choices=(*PARTS, "report", "all"), default="all")
    ap.add_argument("--n-trials", type=int, default=20)
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--redo", action="store_true")
    ap.add_argument(
        "--tag",
        default="",
        help="keep this run's parts as fashion-<part>-TAG.json (another machine's figures beside "
        "the recorded ones; the report reads the untagged)",
    )
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    todo = PARTS if args.part == "all" else (() if args.part == "report" else (args.part,))
    for p in todo:
        path = _path(p, args.tag)
        if os.path.exists(path) and not args.redo:
            print(f"{p}: done ({path}); --redo to measure again", file=sys.stderr)
            continue
        parts = {"stems": part_stems, "teacher": part_teacher, "search": part_search, "final": part_final}
        result = parts[p](args)
        with open(path, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
            f.write("\n")
    text = report()
    with open(os.path.join(RESULTS, "fashion.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
