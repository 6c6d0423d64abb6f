"""Run every benchmark in one go, one after the other (never two at once: they would slow each
other down), and write each one's markdown under benchmarks/results/.

    python benchmarks/run_all.py            # the full set, about 2 hours on 2 cores
    python benchmarks/run_all.py --quick    # a smoke run, about 5 minutes (.ci/run runs it)
    python benchmarks/run_all.py --rebuild-table   # also re-measure the tabular benchmark first

The tabular benchmark's tables (benchmarks/data/digits_resnet18_fine.json, and for the per-layer
space digits_resnet18_allocated.json) are measured once and committed; the full run checks a
sample of the first against live trials. The quick run builds small tables with tiny_resnet
instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def step(name: str, args: list[str], stdout_to: str | None = None) -> float:
    print(f"== {name}: {' '.join(args)}", file=sys.stderr, flush=True)
    from tradeoff.search.task.teacher import cache_dir

    env = dict(os.environ, TRADEOFF_CACHE=cache_dir())  # one teacher cache for every step
    t = time.perf_counter()
    if stdout_to:
        with open(stdout_to, "w") as out:
            subprocess.run(
                [sys.executable, *args], check=True, cwd=os.path.dirname(HERE), env=env, stdout=out
            )
    else:
        subprocess.run([sys.executable, *args], check=True, cwd=os.path.dirname(HERE), env=env)
    seconds = time.perf_counter() - t
    print(f"== {name}: {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rebuild-table", action="store_true")
    a = ap.parse_args()
    q = ["--quick"] if a.quick else []
    b = os.path.join(HERE, "{}.py")
    times = {}
    if a.quick or a.rebuild_table:
        times["tabular build"] = step("tabular build", [b.format("tabular"), "build", *q])
        times["tabular allocated"] = step("tabular allocated", [b.format("tabular"), "allocated", *q])
    if a.quick:  # the depth table is measured once (hours); the quick run smoke-tests its build
        times["tabular depth"] = step("tabular depth", [b.format("tabular"), "allocated", "--depth", *q])
    if not a.quick:
        times["tabular check"] = step("tabular check", [b.format("tabular"), "check", "--n", "4"])
    times["samplers"] = step("samplers", [b.format("samplers"), *q])
    if a.quick:  # the replay as the search runs, bit-width variants on top (its own results file)
        times["samplers variants"] = step("samplers variants", [b.format("samplers"), *q, "--variants"])
    times["runtimes"] = step("runtimes", [b.format("runtimes"), *q])
    if a.quick:  # the full run needs a searched study: python benchmarks/front_latency.py --dir DIR ...
        times["front latency"] = step("front latency", [b.format("front_latency"), "--quick"])
    times["speed"] = step("speed", [b.format("speed"), *q])
    times["memory"] = step("memory", [b.format("memory"), *q])
    cheaper = ["--out", os.path.join(HERE, "results", "cheaper.md")] if not a.quick else []
    times["cheaper"] = step("cheaper", [b.format("cheaper"), *q, *cheaper])
    results = os.path.join(HERE, "results", "workers-quick.md" if a.quick else "workers.md")
    times["workers"] = step("workers", [b.format("workers"), *q], stdout_to=results)
    times["scale"] = step("scale", [b.format("scale"), *q, "ask", "fleet"])
    print("total " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; {sum(times.values()):.0f} s")


if __name__ == "__main__":
    main()
