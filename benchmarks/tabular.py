"""A tabular benchmark: every plan of a fixed grid measured once on the bundled task, so that
sampler comparisons replay trials from a table in seconds instead of hours.

    python benchmarks/tabular.py build            # measure the grid (about 40 min on 1 thread)
    python benchmarks/tabular.py check --n 4      # live trials of sampled grid plans vs the table
    python benchmarks/tabular.py build --quick    # tiny_resnet, a 2x2x2x4 grid: a smoke run
    python benchmarks/tabular.py allocated        # the per-layer (allocated) space's grid (~15 min)
    python benchmarks/tabular.py build --task fashion-mnist --threads 2       # the real task (~1 h)
    python benchmarks/tabular.py allocated --task fashion-mnist --threads 2   # (~1 h)
    python benchmarks/tabular.py allocated --depth    # the same with whole blocks dropped (block_drop)

A build saves its rows after each structure (``TABLE.partial``) and, run again with the same
task, grid and settings, resumes where it stopped: the Fashion-MNIST tables are built in parts.
The table goes to ``benchmarks/data/TASK_resnet18_fine.json`` (``_allocated.json``).

The grid is 5 widths x 5 pruning ratios x 4 ranks x 4 bit-widths = 400 plans, every value on
the default space's steps (on Fashion-MNIST 6 widths, 480 plans: the widest student, 0.875, is
measured because width 1.0, the teacher's own weights, is a cliff above it); after it,
``--holdout`` plans drawn from the default space *off* the grid are measured live the same way
and stored beside it, so that `samplers.py` can report how far interpolating the grid onto the
whole stepped space is from a real measurement.

Each structural combination (student width x prune ratio x rank ratio) is built once by the
runner (`Runner.build`, the search's own code: teacher copy, knobs, distillation/fine-tune),
measured as float, then quantized at each bit-width from the same fine-tuned float model, which
is exactly what `apply_plan` does for those plans (the same seed gives the same fine-tune), and
measured again. The table is JSON with the machine, versions and settings it was measured with.

``allocated``: the same for the space of ``--granularity allocated`` (per technique a budget, plus
the allocation sharpness), whose plans are per-layer: the task's sensitivity table is measured
once (as `tradeoff search` does), each grid point is turned into its per-layer plan by the
search's own `plan_from_params`, and each distinct per-layer structure is fine-tuned once and
quantized at every average-bits budget (mixed precision where the allocation mixes). 3 widths x
3 pruning budgets x 3 rank budgets x 3 sharpnesses x 6 bit budgets = 486 plans (on Fashion-MNIST
4 widths, 648 plans: the 0.875 student below the teacher's width, as in the global grid), plus
off-grid plans measured live for the interpolation check.

``allocated --depth``: the allocated space with the depth knob searched as `depth.py`'s arm with
depth searches it (``--space block_drop=0:0.6:0.2``): every value of that knob (0, 0.2, 0.4,
0.6 of the droppable blocks, dropped least harmful first by the same sensitivity table) is a grid
axis, measured, not interpolated, so the grid is 4x the allocated one (the table:
``TASK_resnet18_allocated_depth.json``; `samplers.py --problems per-layer-depth` replays it).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time

import torch

from tradeoff.search.study.config import SearchConfig
from tradeoff.search.task.tasks import task_for
from tradeoff.search.task.teacher import train_teacher
from tradeoff.search.trial.measure import cpu_name
from tradeoff.search.trial.runner import CALIBRATION_SAMPLES, Runner
from tradeoff.search.views.export import versions
from tradeoff.spaces import ApplyContext, Compressed, Plan
from tradeoff.spaces.quantization import quantize

HERE = os.path.dirname(os.path.abspath(__file__))


def table_path(task: str, granularity: str, depth: bool = False) -> str:
    """Where the table of ``task`` is kept: benchmarks/data/TASK_resnet18_fine.json (global),
    ..._allocated.json, or ..._allocated_depth.json (``depth``: allocated with block_drop)."""
    name = ("allocated" if granularity == "allocated" else "fine") + ("_depth" if depth else "")
    return os.path.join(HERE, "data", f"{task}_resnet18_{name}.json")


TABLE = table_path("digits", "global")
GRID = {
    "student_width": [0.25, 0.375, 0.5, 0.75, 1.0],
    "prune_ratio": [0.0, 0.2, 0.4, 0.6, 0.8],
    "rank_ratio": [0.1, 0.4, 0.7, 1.0],
    "weight_bits": [32, 8, 4, 2],
}
QUICK_GRID = {
    "student_width": [0.5, 1.0],
    "prune_ratio": [0.0, 0.5],
    "rank_ratio": [0.5, 1.0],
    "weight_bits": [32, 8, 4, 2],
}
# On Fashion-MNIST width 1.0 keeps the teacher's weights (92-94 % at search time) and every
# narrower student is distilled from scratch (at most 90.4 % on the first real-run seed): a cliff
# between 0.875 and 1.0 that a grid stepping from 0.75 to 1.0 would interpolate away. There the
# widest student is measured, not interpolated (0.625 stays off the grid for the holdout check).
TASK_GRIDS = {"fashion-mnist": dict(GRID, student_width=[0.25, 0.375, 0.5, 0.75, 0.875, 1.0])}
ALLOCATED_TABLE = table_path("digits", "allocated")
ALLOCATED_GRID = {
    "student_width": [0.25, 0.5, 1.0],
    "prune_ratio": [0.0, 0.4, 0.8],
    "rank_ratio": [0.1, 0.55, 1.0],
    "allocation": [0.0, 0.5, 1.0],
    "weight_bits": [32, 8, 6, 4, 3, 2],
}
TASK_ALLOCATED_GRIDS = {"fashion-mnist": dict(ALLOCATED_GRID, student_width=[0.25, 0.5, 0.875, 1.0])}
QUICK_ALLOCATED_GRID = {
    "student_width": [0.5, 1.0],
    "prune_ratio": [0.0, 0.5],
    "rank_ratio": [0.5, 1.0],
    "allocation": [0.0, 1.0],
    "weight_bits": [32, 8, 6, 4, 3, 2],
}
# `--depth`: the depth knob as depth.py's arm with depth searches it, every value of it on the grid
DEPTH_SPACE = {"block_drop": {"low": 0.0, "high": 0.6, "step": 0.2}}
DEPTH_VALUES = [0.0, 0.2, 0.4, 0.6]
QUICK_DEPTH_VALUES = [0.0, 0.6]  # tiny_resnet has one droppable block (layer1.0)
FIGURES = (
    "accuracy",
    "size_bytes",
    "latency_ms",
    "energy_mj",
    "flops",
    "params",
    "latency_p10_ms",
    "latency_p90_ms",
)


def key(plan: Plan | dict) -> str:
    d = plan.params() if isinstance(plan, Plan) else plan
    return f"{float(d['student_width']):g}|{float(d['prune_ratio']):g}|{float(d['rank_ratio']):g}|{int(d['weight_bits'])}"


def setup(
    model: str,
    threads: int | None = None,
    granularity: str = "global",
    task_name: str = "digits",
    space: dict | None = None,
):
    torch.set_flush_denormal(True)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    config = SearchConfig(model=model, granularity=granularity, task=task_name, space=space or {})
    config = config.validated(n_trials=40)
    task = task_for(config)
    teacher, _, _ = train_teacher(task, log=lambda m: print(m, file=sys.stderr))
    return config, task, Runner(config, task, teacher)


def table_figures(figures: dict) -> dict:
    """A measurement's figures as a table row keeps them, and the latency timed against the teacher
    in the same window where there is one (the search's objective on real runs): far steadier than
    the plan's own milliseconds on a busy 2-core machine."""
    ratio = figures.get("latency_ratio")
    return {k: figures[k] for k in FIGURES} | ({"latency_ratio": ratio} if ratio is not None else {})


def row(plan: Plan, m, times: dict) -> dict:
    figures = m.to_dict()
    return {
        "plan": plan.params(),
        "figures": table_figures(figures),
        "times": {k: round(v, 3) for k, v in times.items()},
    }


def structure(runner: Runner, task, w: float, p: float, r: float, bit_widths) -> tuple[list[dict], float]:
    """One fine-tune of a structural plan, measured as float and at each bit-width from the
    same fine-tuned float model (what `apply_plan` does for those plans): the rows and the
    float accuracy."""
    rows = []
    plan = Plan(student_width=w, prune_ratio=p, rank_ratio=r, weight_bits=32)
    compressed, times = runner.build(plan)
    times["measure_s"] = -time.perf_counter()
    m = runner.measure(compressed)
    times["measure_s"] += time.perf_counter()
    rows.append(row(plan, m, times))
    for bits in (b for b in bit_widths if b != 32):
        qplan = Plan(student_width=w, prune_ratio=p, rank_ratio=r, weight_bits=bits)
        ctx = ApplyContext(
            example_input=task.example_input,
            num_classes=task.num_classes,
            calibration=tuple(task.train.x[:CALIBRATION_SAMPLES].split(64)),
        )
        t = time.perf_counter()
        q = quantize(compressed.float_model, bits, ctx, [])
        qtimes = dict(times, step_weight_bits_s=time.perf_counter() - t)
        t = time.perf_counter()
        qm = runner.measure(
            Compressed(
                q,
                compressed.float_model,
                dataclasses.replace(compressed.facts, weight_bits=bits),
                compressed.skipped,
                {},
            )
        )
        qtimes["measure_s"] = time.perf_counter() - t
        rows.append(row(qplan, qm, qtimes))
    return rows, m.accuracy


def off_grid(grid: dict, n: int, seed: int = 7) -> list[tuple[float, float, float]]:
    """``n`` structural plans of the default space with no value on the grid (steps included)."""
    import random

    from tradeoff.spaces import KNOBS

    rng = random.Random(seed)
    values = {}
    for k in ("student_width", "prune_ratio", "rank_ratio"):
        d = KNOBS[k].default_space
        steps = round((d["high"] - d["low"]) / d["step"])
        values[k] = [round(d["low"] + i * d["step"], 6) for i in range(steps + 1)]
        values[k] = [v for v in values[k] if all(abs(v - g) > 1e-9 for g in grid[k])]
    return [
        tuple(rng.choice(values[k]) for k in ("student_width", "prune_ratio", "rank_ratio")) for _ in range(n)
    ]


class Progress:
    """A build's rows so far, saved beside ``out`` (``out.partial``) after each structure, so that a
    build stopped anywhere resumes where it stopped; a saved build of another task, grid or setting
    is started again. ``state["seconds"]`` adds up the parts' times."""

    def __init__(self, out: str, task, config, grid: dict):
        self.path = out + ".partial"
        self.ident = {"fingerprint": task.fingerprint(), "grid": grid, "config": json.loads(config.to_json())}
        self.state: dict = {"rows": [], "done": [], "seconds": 0.0}
        if os.path.exists(self.path):
            with open(self.path) as f:
                saved = json.load(f)
            if saved.get("ident") == self.ident:
                self.state = saved["state"]
                print(
                    f"resuming {self.path}: {len(self.state['done'])} points done, "
                    f"{self.state['seconds']:.0f} s spent",
                    file=sys.stderr,
                )
        self.before, self.t = self.state["seconds"], time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.t

    def done(self, point) -> bool:
        return list(point) in self.state["done"]

    def add(self, point, rows: list[dict]) -> None:
        self.state["rows"] += rows
        self.state["done"].append(list(point))
        self.save()

    def save(self) -> None:
        self.state["seconds"] = self.seconds()
        with open(self.path + ".tmp", "w") as f:
            json.dump({"ident": self.ident, "state": self.state}, f)
        os.replace(self.path + ".tmp", self.path)

    def finish(self) -> None:
        os.remove(self.path)


def build(
    grid: dict, model: str, out: str, threads: int | None = None, holdout: int = 0, task_name: str = "digits"
) -> None:
    config, task, runner = setup(model, threads, task_name=task_name)
    progress = Progress(out, task, config, grid)
    structural = list(itertools.product(grid["student_width"], grid["prune_ratio"], grid["rank_ratio"]))
    for i, (w, p, r) in enumerate(structural):
        if progress.done((w, p, r)):
            continue
        new, accuracy = structure(runner, task, w, p, r, grid["weight_bits"])
        progress.add((w, p, r), new)
        print(
            f"[{i + 1}/{len(structural)}] width {w:g} prune {p:g} rank {r:g}: float accuracy {accuracy:.2%}, "
            f"{progress.seconds():.0f} s so far",
            file=sys.stderr,
        )
    held = []
    for w, p, r in off_grid(grid, holdout):
        held += structure(runner, task, w, p, r, grid["weight_bits"])[0]
        print(f"off-grid width {w:g} prune {p:g} rank {r:g} measured", file=sys.stderr)
    rows = progress.state["rows"]
    base = next(r for r in rows if key(r["plan"]) == key(Plan()))
    write_table(out, task, config, grid, progress.seconds(), rows, held, base)
    progress.finish()


def write_table(out, task, config, grid, seconds, rows, held, base, meta=None, **extra) -> None:
    """The measured table as JSON at ``out``, with the task, machine, versions and settings it
    was measured with (``meta``: more of them; ``extra``: more top-level entries)."""
    table = {
        "meta": {
            "task": task.name,
            "model": task.model_name,
            "fingerprint": task.fingerprint(),
            "grid": grid,
            "config": json.loads(config.to_json()),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "versions": versions(),
            **(meta or {}),
            "val_size": len(task.val),
            "seconds": round(seconds, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        **extra,
        "baseline": base["figures"],
        "rows": rows,
        "holdout": held,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(table, f, indent=1)
    print(f"wrote {len(rows)} plans to {out} in {table['meta']['seconds']:.0f} s", file=sys.stderr)


def allocated_rows(
    runner: Runner, task, table, points, bit_budgets, done: dict, axes: tuple = ()
) -> list[dict]:
    """The rows of the allocated plans at ``points`` (width, prune budget, rank budget, sharpness,
    then the values of the extra ``axes``: block_drop), each at every budget of ``bit_budgets``:
    one fine-tune per distinct per-layer structure (``done`` keeps them across calls), quantized
    from it as `apply_plan` does."""
    from tradeoff.spaces import KNOBS
    from tradeoff.spaces.allocation import SHARPNESS, plan_from_params
    from tradeoff.spaces.plan import format_plan, structure_key

    space = runner.config.space
    rows = []
    for w, p, r, s, *extra in points:
        params = {"student_width": w, "prune_ratio": p, "rank_ratio": r, SHARPNESS: s}
        params.update(zip(axes, extra))

        def plan_at(bits, params=params):
            return plan_from_params(
                {**params, "weight_bits": bits}, granularity="allocated", table=table, space=space
            )

        float_plan = plan_at(32)
        skey = structure_key(float_plan)
        if skey not in done:
            t = time.perf_counter()
            compressed, times = runner.build(float_plan)
            done[skey] = (compressed, times)
            print(
                f"  fine-tuned {format_plan(float_plan)} in {time.perf_counter() - t:.0f} s", file=sys.stderr
            )
        compressed, times = done[skey]
        ctx = ApplyContext(  # as `Runner.build` makes it: the study's runtime decides the int8 form
            example_input=task.example_input,
            num_classes=task.num_classes,
            calibration=tuple(task.train.x[:CALIBRATION_SAMPLES].split(64)),
            runtime=runner.config.runtime,
        )
        for bits in bit_budgets:
            plan = plan_at(bits)
            qtimes = dict(times)
            if bits == 32:
                c = compressed
            else:
                t = time.perf_counter()
                applied = KNOBS["weight_bits"].apply(compressed.float_model, plan.config("weight_bits"), ctx)
                qtimes["step_weight_bits_s"] = time.perf_counter() - t
                facts = dataclasses.replace(compressed.facts, **applied.facts)
                c = Compressed(applied.model, compressed.float_model, facts, compressed.skipped, {})
            t = time.perf_counter()
            m = runner.measure(c)
            qtimes["measure_s"] = time.perf_counter() - t
            figures = m.to_dict()
            rows.append(
                {
                    "plan": {**params, "weight_bits": bits},
                    "plan_text": format_plan(plan),
                    "figures": table_figures(figures),
                    "times": {k: round(v, 3) for k, v in qtimes.items()},
                }
            )
    return rows


def off_grid_allocated(grid: dict, n: int, seed: int = 7) -> list[tuple[float, ...]]:
    """``n`` (width, prune budget, rank budget, sharpness) points of the allocated space off the
    grid, each with a value of every extra axis (block_drop: on its grid, which holds every value
    of its space)."""
    import random

    from tradeoff.spaces.allocation import SHARPNESS_STEP

    rng = random.Random(seed)
    structural = off_grid({k: grid[k] for k in ("student_width", "prune_ratio", "rank_ratio")}, n, seed)
    sharp = [round(i * SHARPNESS_STEP, 6) for i in range(round(1 / SHARPNESS_STEP) + 1)]
    sharp = [v for v in sharp if all(abs(v - g) > 1e-9 for g in grid["allocation"])]
    extra = [k for k in grid if k not in (*STRUCTURAL, "allocation", "weight_bits")]
    return [(*point, rng.choice(sharp), *(rng.choice(grid[k]) for k in extra)) for point in structural]


STRUCTURAL = ("student_width", "prune_ratio", "rank_ratio")


def build_allocated(
    grid: dict,
    model: str,
    out: str,
    threads: int | None = None,
    holdout: int = 0,
    task_name: str = "digits",
    space: dict | None = None,
) -> None:
    from tradeoff.search.study.sensitivity import measure_for_study
    from tradeoff.spaces.sensitivity import SensitivityTable

    config, task, runner = setup(model, threads, granularity="allocated", task_name=task_name, space=space)
    extra = tuple(k for k in grid if k not in (*STRUCTURAL, "allocation", "weight_bits"))
    progress = Progress(out, task, config, grid)
    state = progress.state
    if "sensitivity" in state:  # a resumed build keeps the table its rows were allocated by
        table = SensitivityTable.from_dict(state["sensitivity"])
    else:
        t = time.perf_counter()
        table = measure_for_study(config, task, runner.teacher, log=lambda m: print(m, file=sys.stderr))
        state["sensitivity"], state["sensitivity_s"] = table.to_dict(), time.perf_counter() - t
        progress.save()
    runner.table = table
    points = list(
        itertools.product(
            grid["student_width"],
            grid["prune_ratio"],
            grid["rank_ratio"],
            grid["allocation"],
            *(grid[k] for k in extra),
        )
    )
    done: dict = {}
    for i, point in enumerate(points):
        if progress.done(point):
            continue
        rows = allocated_rows(runner, task, table, [point], grid["weight_bits"], done, extra)
        state["structures"] = sorted(set(state.get("structures", [])) | set(done))
        progress.add(point, rows)
        print(
            f"[{i + 1}/{len(points)}] width/prune/rank/sharpness{''.join('/' + k for k in extra)} {point}: {progress.seconds():.0f} s so far",
            file=sys.stderr,
        )
    held = allocated_rows(
        runner, task, table, off_grid_allocated(grid, holdout), grid["weight_bits"], {}, extra
    )
    rows = state["rows"]
    base = next(
        r
        for r in rows
        if key(r["plan"]) == key(Plan())
        and float(r["plan"]["allocation"]) == grid["allocation"][0]
        and all(float(r["plan"][k]) == 0.0 for k in extra)
    )
    meta = {
        "granularity": "allocated",
        "sensitivity": {"seconds": round(state["sensitivity_s"], 1), "metric": table.metric},
        "structures_fine_tuned": len(set(state.get("structures", [])) | set(done)),
    }
    sensitivity = table.to_dict()
    write_table(out, task, config, grid, progress.seconds(), rows, held, base, meta, sensitivity=sensitivity)
    progress.finish()


def load(path: str = TABLE) -> dict:
    with open(path) as f:
        table = json.load(f)
    table["by_key"] = {key(r["plan"]): r for r in table["rows"]}
    return table


def check(path: str, n: int, seed: int = 1) -> list[str]:
    """Live trials of ``n`` sampled grid plans against the table: the markdown lines."""
    import random

    table = load(path)
    _, task, runner = setup(table["meta"]["model"], task_name=table["meta"]["task"])
    if task.fingerprint() != table["meta"]["fingerprint"]:
        return [f"the table was measured on another task (fingerprint {table['meta']['fingerprint']})"]
    plans = random.Random(seed).sample(table["rows"], n)
    lines = [
        "| plan | accuracy table / live | size_bytes table / live | latency_ms table / live |",
        "| --- | --- | --- | --- |",
    ]
    for r in plans:
        plan = Plan.from_params(r["plan"])
        compressed, _ = runner.build(plan)
        m = runner.measure(compressed)
        t = r["figures"]
        lines.append(
            f"| {key(plan).replace('|', '/')} | {t['accuracy']:.4f} / {m.accuracy:.4f} | {t['size_bytes']} / {m.size_bytes} | "
            f"{t['latency_ms']:.3f} / {m.latency_ms:.3f} ({m.latency_ms / t['latency_ms']:.2f}x) |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("build", "check", "allocated"))
    ap.add_argument("--quick", action="store_true", help="tiny_resnet on a small grid")
    ap.add_argument("--task", default="digits", help="the bundled task to measure on (digits, fashion-mnist)")
    ap.add_argument("--table", help="table file (default: benchmarks/data/TASK_resnet18_fine.json)")
    ap.add_argument("--n", type=int, default=4, help="check: live plans to compare")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads for training and latency (default 1)"
    )
    ap.add_argument("--holdout", type=int, default=6, help="build: off-grid structural plans measured live")
    ap.add_argument(
        "--depth",
        action="store_true",
        help="allocated: search block_drop too (0, 0.2, 0.4, 0.6 on the grid; table ..._allocated_depth.json)",
    )
    a = ap.parse_args()
    if a.action == "allocated":
        quick = os.path.join(HERE, "results", f"quick_allocated{'_depth' if a.depth else ''}.json")
        grid = QUICK_ALLOCATED_GRID if a.quick else TASK_ALLOCATED_GRIDS.get(a.task, ALLOCATED_GRID)
        if a.depth:
            grid = dict(grid, block_drop=QUICK_DEPTH_VALUES if a.quick else DEPTH_VALUES)
        build_allocated(
            grid,
            "tiny_resnet" if a.quick else "resnet18",
            a.table or (quick if a.quick else table_path(a.task, "allocated", depth=a.depth)),
            threads=a.threads,
            holdout=1 if a.quick else a.holdout,
            task_name=a.task,
            space=DEPTH_SPACE if a.depth else None,
        )
        return
    if a.depth:
        sys.exit("--depth: only with `allocated` (the search's default granularity)")
    quick = os.path.join(HERE, "results", "quick_grid.json")
    path = a.table or (quick if a.quick else table_path(a.task, "global"))
    if a.action == "build":
        build(
            QUICK_GRID if a.quick else TASK_GRIDS.get(a.task, GRID),
            "tiny_resnet" if a.quick else "resnet18",
            path,
            threads=a.threads,
            holdout=1 if a.quick else a.holdout,
            task_name=a.task,
        )
    else:
        text = "\n".join(check(path, a.n))
        print(text)
        name = "tabular_check" + ("-quick" if a.quick else "" if a.task == "digits" else f"-{a.task}")
        with open(os.path.join(HERE, "results", f"{name}.md"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
