"""What the sensitivity pass costs, and that it and an allocated plan work on common architectures.

    python benchmarks/sensitivity.py --out benchmarks/results/sensitivity.md

For each model, a randomly initialised torchvision network (10 classes) and a fixed batch of
random images labelled by the network itself (what is timed and checked here does not depend on
trained weights; the bundled task's trained teacher is timed by `benchmarks/allocation.py`):

- the sensitivity pass (``spaces.sensitivity.measure_sensitivity``), timed, with its groups and
  the layers it skipped, and why;
- an allocated plan (prune budget 0.3, rank budget 0.5, 4 average bits, sharpness 0.5) made from
  that table and applied for ONNX Runtime (``apply_plan``, no fine-tuning), run on the batch.

resnet18 and mobilenet_v2 at 224 px (the issue's cost question), the others at 64 px.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from tradeoff.search.trial.measure import cpu_name
from tradeoff.spaces import ApplyContext, apply_plan, format_plan, validate_space
from tradeoff.spaces.allocation import plan_from_params
from tradeoff.spaces.sensitivity import measure_sensitivity

MODELS = {
    "resnet18": 224,
    "mobilenet_v2": 224,
    "efficientnet_b0": 64,
    "regnet_x_400mf": 64,
    "shufflenet_v2_x1_0": 64,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated models")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    names = args.only.split(",") if args.only else list(MODELS)
    lines = [
        f"### Sensitivity pass and an allocated plan per architecture ({cpu_name()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__})",
        "",
        "`python benchmarks/sensitivity.py`",
        "",
        "| model | px | eval images | groups (prune / rank / bits) | seconds (shares, bits, rank, prune, "
        "predictor) | total s | metric | allocated plan | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    skipped_lines = []
    for name in names:
        size = MODELS[name]
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, num_classes=10).eval()
        x = torch.randn(64, 3, size, size)
        with torch.no_grad():
            y = model(x).argmax(1)
        t = time.perf_counter()
        table = measure_sensitivity(model, x, y, example_input=x[:1], num_classes=10)
        total = time.perf_counter() - t
        space = validate_space({})
        plan = plan_from_params(
            {"prune_ratio": 0.3, "rank_ratio": 0.5, "weight_bits": 4, "allocation": 0.5},
            granularity="allocated",
            table=table,
            space=space,
        )
        ctx = ApplyContext(example_input=x[:1], num_classes=10, calibration=(x[:32],), runtime="onnxruntime")
        try:
            compressed = apply_plan(model, plan, ctx)
            with torch.no_grad():
                out = compressed.model(x[:4])
            runs = f"yes, output {tuple(out.shape)}"
            if compressed.skipped:
                skipped_lines.append(f"- {name} plan: " + "; ".join(compressed.skipped[:6]))
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            runs = f"no: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        g = {k: len(v) for k, v in table.rows.items()}
        sec = table.seconds
        lines.append(
            f"| {name} | {size} | {table.images} | {g['prune_ratio']} / {g['rank_ratio']} / {g['weight_bits']} | "
            f"{sec['shares_s']:.0f}, {sec['weight_bits_s']:.0f}, {sec['rank_ratio_s']:.0f}, "
            f"{sec['prune_ratio_s']:.0f}, {sec['predictor_s']:.0f} | {total:.0f} | {table.metric} | "
            f"{format_plan(plan)} | {runs} |"
        )
        reasons: dict[str, int] = {}
        for s in table.skipped:
            key = s.split(": ", 2)[0] + ": " + s.split(": ", 2)[-1]
            reasons[key] = reasons.get(key, 0) + 1
        if reasons:
            skipped_lines.append(
                f"- {name} table skipped: " + "; ".join(f"{k} ({n} layers)" for k, n in reasons.items())
            )
        print(lines[-1], flush=True)
    text = "\n".join([*lines, "", *skipped_lines]) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
