"""Export one trial as a deployable model directory (``search.views.verify`` loads and verifies one).

``export_trial`` rebuilds the model from the trial's stored plan with the runner's own
``build`` (the same ``apply_plan`` the search ran), re-measures it in the study's runtime,
evaluates it once on the held-out test split, and writes, all at once (a temporary directory
renamed into place):

    model.onnx    ONNX Runtime and OpenVINO studies: the exact file that was measured (float, or
                  QDQ int8 from the runtime's quantizer); TorchScript studies: the float
                  network's ONNX twin where it exports cleanly, checked against model.pt's top-1
    model.pt      TorchScript, traced and frozen (loads with ``torch.jit.load`` alone, no
                  tradeoff classes and no Python pickle): what a TorchScript study measured, and
                  for the other runtimes the float network's twin (float plans only)
    plan.json     the plan
    record.json   the plan, the stored and re-measured figures and their differences, the
                  baseline, the test accuracy, the task fingerprint, software versions and the
                  SHA-256 of every file

and manifest.json, the size and SHA-256 of every other file. ``search.views.verify.load`` checks every
file against it before it loads anything.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import optuna

from tradeoff.search.errors import UsageError
from tradeoff.search.trial.figures import FIGURES
from tradeoff.search.trial.measure import Measurement, accuracy, deploy
from tradeoff.spaces.runtimes import get_runtime, version
from tradeoff.spaces.runtimes.onnx import ONNX_FILE, TORCHSCRIPT_FILE
from tradeoff.storage.artifacts import sha256_file

FORMAT = "tradeoff-export"
# 1: record.json lists model.pt and model.onnx. 2: manifest.json lists every file.
# 3: the runtime, and ``deployed_file`` (model.onnx or model.pt): the file that was measured.
EXPORT_VERSION = 3
MANIFEST_FORMAT = "tradeoff-export-manifest"
MANIFEST_FILE = "manifest.json"
MAX_JSON_BYTES = 16 << 20  # a record or manifest larger than this is not one tradeoff wrote
MODEL_FILE = TORCHSCRIPT_FILE
PLAN_FILE = "plan.json"
RECORD_FILE = "record.json"
FRONT_FILE = "front.json"  # export --front: one line per exported trial, and the rank correlation
FRONT_FORMAT = "tradeoff-front-export"


class ExportError(UsageError):
    """An export directory that cannot be written, loaded or trusted."""


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("tradeoff", "torch", "torchvision", "optuna", "torch-pruning", "onnx", "onnxruntime"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def tolerances() -> dict[str, str]:
    """What counts as noise when a figure is measured again, per figure (the registry's)."""
    return {f.name: f.tolerance.text for f in FIGURES.values()}


def differences(stored: dict[str, Any], measured: Measurement, *, n_val: int) -> list[str]:
    """The re-measured figures that differ from the stored ones beyond noise (see
    :func:`tolerances`)."""
    now = measured.to_dict()
    found = (f.differs(stored, now, n_val=n_val) for f in FIGURES.values())
    return [d for d in found if d]


def previous_export(folder: str) -> bool:
    """Whether ``folder`` is an export tradeoff wrote and holds nothing else: its manifest (or,
    for format 1, its record) is tradeoff's, and every entry is a file the export lists."""
    entries = set(os.listdir(folder))
    manifest_path = os.path.join(folder, MANIFEST_FILE)
    try:
        if os.path.lexists(manifest_path):
            manifest = read_json(manifest_path, "manifest")
            if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
                return False
            listed = manifest.get("files")
            return isinstance(listed, dict) and entries <= {MANIFEST_FILE, *map(str, listed)}
        record = read_json(os.path.join(folder, RECORD_FILE), "record")
    except ExportError:
        return False
    return (
        isinstance(record, dict)
        and record.get("format") == FORMAT
        and entries <= {MODEL_FILE, ONNX_FILE, PLAN_FILE, RECORD_FILE}
    )


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def previous_front(folder: str) -> bool:
    """Whether ``folder`` is a front export (``export --front``) and holds nothing else: its
    front.json and folders that are each a previous export."""
    entries = set(os.listdir(folder))
    if FRONT_FILE not in entries:
        return False
    try:
        summary = read_json(os.path.join(folder, FRONT_FILE), "front summary")
    except ExportError:
        return False
    if not isinstance(summary, dict) or summary.get("format") != FRONT_FORMAT:
        return False
    return all(
        name == FRONT_FILE
        or (
            name.startswith("trial-")
            and os.path.isdir(os.path.join(folder, name))
            and not os.path.islink(os.path.join(folder, name))
            and previous_export(os.path.join(folder, name))
        )
        for name in entries
    )


def check_target(
    out_dir: str, force: bool, *, protected: Mapping[str, str] | None = None, front: bool = False
) -> None:
    """Refuse an ``--output`` that export must not write: empty, an existing file, an existing
    folder without ``--force``, and with it any folder but a previous export (``front``: a
    previous front export) or an empty one; and any folder that is, holds or lies inside a
    ``protected`` path (``{what: path}``: the study's database file, its artifact store),
    whatever ``--force`` says."""
    if not out_dir or not out_dir.strip():
        raise ExportError("--output is empty; name the directory to write the export to")
    real = os.path.realpath(out_dir)
    for what, path in (protected or {}).items():
        other = os.path.realpath(path)
        if _within(other, real) or _within(real, other):
            relation = "is" if other == real else "holds" if _within(other, real) else "lies inside"
            raise ExportError(
                f"--output {out_dir} {relation} the study's {what} ({path}); export to a new directory "
                "of its own"
            )
    if os.path.lexists(out_dir):
        if not os.path.isdir(out_dir) or os.path.islink(out_dir):
            raise ExportError(f"{out_dir} exists and is not a directory; choose another --output")
        if not force:
            raise ExportError(f"export directory {out_dir} exists; choose another --output or pass --force")
        try:
            empty = not os.listdir(out_dir)
        except OSError as e:
            raise ExportError(f"cannot read the export directory {out_dir}: {e.strerror}") from None
        if not empty and not (previous_front(out_dir) if front else previous_export(out_dir)):
            what = "front export (front.json and its trial-N exports)" if front else "export"
            raise ExportError(
                f"--force replaces only a previous {what}, and {out_dir} is not one (no tradeoff manifest, "
                "or files it does not list); choose another --output"
            )
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise ExportError(f"cannot export to {out_dir}: its parent directory {parent} does not exist")


def _move_into_place(tmp: str, out_dir: str) -> None:
    """Replace ``out_dir`` with ``tmp`` so that a reader sees the old export or the new one."""
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out_dir)), prefix=".old-export-")
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def export_trial(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    out_dir: str,
    *,
    runner,
    force: bool = False,
    protected: Mapping[str, str] | None = None,
    finetune_steps: int = 0,
    log=print,
) -> dict[str, Any]:
    """Rebuild, re-measure, test and write ``trial`` to ``out_dir`` (``check_target`` with
    ``protected``); returns the record. ``finetune_steps``: train the plan that many batches
    more first (:meth:`Runner.build`'s final fine-tune) and write that model; the record's
    ``final_finetune`` holds both accuracies, search-time and final, with their intervals."""
    from tradeoff.search.study.records import (
        CONFIG_ATTR,
        INT8_FORM_ATTR,
        TEACHER_ATTR,
        baseline_latency,
        baseline_of,
        constraints_of,
        feasible,
        plan_words,
    )
    from tradeoff.search.trial.measure.accuracy import differ_beyond_noise
    from tradeoff.spaces import format_plan

    check_target(out_dir, force, protected=protected)
    plan = runner.plan_of(trial.params)
    task = runner.task

    log(f"restoring trial #{trial.number} ({plan_words(trial)}) ...")
    compressed, times, source = runner.restore(study, trial)
    log(f"trial #{trial.number}: from {source}")
    measured = runner.measure(compressed, baseline_ms=baseline_latency(study))
    stored = {k: v for k, v in trial.user_attrs.items() if k in Measurement.keys()}
    diffs = differences(stored, measured, n_val=len(task.val))
    for d in diffs:
        log(f"warning: re-measured {d}")
    runtime = runner.config.runtime
    deployed = deploy(compressed.model, runtime, task.example_input)
    test_acc = accuracy(deployed, task.test.x, task.test.y)
    log(f"test accuracy {test_acc:.2%} on {len(task.test)} held-out images ({runtime})")
    final = None
    if finetune_steps:
        search_time = _accuracies(measured.accuracy, len(task.val), test_acc, len(task.test))
        if not any(k.structural and not k.is_off(cfg.value) for k, cfg in plan.configs()):
            final = {
                "steps": 0,
                "search": search_time,
                "reason": "the plan changes no structure: its post-training knobs have no weights to train",
            }
            log(f"final fine-tune: nothing to train ({final['reason']}); exporting the search-time model")
        else:
            log(f"final fine-tune: {finetune_steps} steps, distilling from the teacher ...")
            compressed, final_times = runner.build(
                plan,
                int8_form=trial.user_attrs.get(INT8_FORM_ATTR, "auto"),
                study=study,
                final_steps=finetune_steps,
                progress=getattr(log, "progress", log),
            )
            measured = runner.measure(compressed, baseline_ms=baseline_latency(study))
            deployed = deploy(compressed.model, runtime, task.example_input)
            before = test_acc
            test_acc = accuracy(deployed, task.test.x, task.test.y)
            final_acc = _accuracies(measured.accuracy, len(task.val), test_acc, len(task.test))
            seconds = round(runner.final_seconds, 1)
            final = {
                "steps": finetune_steps,
                "seconds": seconds,
                "method": "distillation from the teacher on batches of the whole training split "
                "(SGD at the fine-tuning rate, cosine schedule), from the structure's kept float model "
                "where the study kept it",
                "search": search_time,
                "final": final_acc,
                "test_change": round(test_acc - before, 6),
                "raised": test_acc > before,
                "beyond_noise": test_acc > before and differ_beyond_noise(test_acc, before, len(task.test)),
            }
            source += f"; then a final fine-tune of {finetune_steps} steps"
            verdict = "raised" if test_acc > before else "did not raise"
            log(
                f"final fine-tune ({finetune_steps} steps, {seconds:.0f} s) {verdict} the test accuracy: "
                f"{before:.2%} -> {test_acc:.2%} (95 % interval {final_acc['test_interval'][0]:.2%}-"
                f"{final_acc['test_interval'][1]:.2%}); validation {search_time['val_accuracy']:.2%} -> "
                f"{final_acc['val_accuracy']:.2%}"
            )

    parent = os.path.dirname(os.path.abspath(out_dir))
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(out_dir))}.tmp-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; an export is an ordinary directory
    try:
        writer = get_runtime(runtime)
        deployed_file = writer.file
        files, onnx_info = writer.write(deployed, compressed.model, task.example_input, task.test.x, tmp)
        for name, info in files.items():
            path = os.path.join(tmp, name)
            info.update(bytes=os.path.getsize(path), sha256=sha256_file(path))
        record = {
            "format": FORMAT,
            "version": EXPORT_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "study": study.study_name,
            "trial": trial.number,
            "plan": plan.to_dict(),
            "plan_text": format_plan(plan, compressed.facts),  # dropped blocks by name
            "skipped_layers": list(compressed.skipped),
            "stored": stored,
            "constraints": constraints_of(trial),  # the study's, as stored on the trial: <= 0 is met
            "feasible": feasible(trial),
            "measured": measured.to_dict(),
            "differences": diffs,
            "tolerances": tolerances(),
            "test_accuracy": test_acc,
            "test_images": len(task.test),
            "baseline": baseline_of(study),
            "teacher": study.user_attrs.get(TEACHER_ATTR),
            "task": {
                "name": task.name,
                "model": task.model_name,
                "fingerprint": task.fingerprint(),
                "data_fingerprint": task.data_fingerprint(),
                "num_classes": task.num_classes,
                "classes": list(task.classes),
                "input_shape": list(task.example_input.shape),
                "input_dtype": "float32",
            },
            "config": json.loads(study.user_attrs[CONFIG_ATTR]),
            "rebuild_seconds": {k: round(v, 3) for k, v in times.items()},
            "weights_from": source,
            **({"final_finetune": final} if final is not None else {}),
            "onnx": onnx_info,
            "runtime": version(runtime),
            "deployed_file": deployed_file,
            "files": files,
            "versions": versions(),
        }
        with open(os.path.join(tmp, PLAN_FILE), "w") as f:
            json.dump(plan.to_dict(), f, indent=2)
            f.write("\n")
        with open(os.path.join(tmp, RECORD_FILE), "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")
        write_manifest(tmp)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def write_front(out_dir: str, trials, export_one, *, finetune_steps: int) -> dict[str, Any]:
    """Export each of ``trials`` with ``export_one(trial, folder)`` into ``out_dir/trial-N``
    and write ``front.json``: per trial its plan, size and accuracies (search-time and, with a
    final fine-tune, final), and over the fine-tuned plans the rank correlation of the search's
    validation accuracy with the final test accuracy (Spearman and Kendall; how well a short
    fine-tune ranks plans). All or nothing: written in a temporary folder moved into place."""
    from scipy.stats import kendalltau, spearmanr

    from tradeoff.search.study.records import PLAN_TEXT_ATTR

    parent = os.path.dirname(os.path.abspath(out_dir))
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(out_dir))}.tmp-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        rows = []
        for t in trials:
            record = export_one(t, os.path.join(tmp, f"trial-{t.number}"))
            final = record.get("final_finetune") or {}
            rows.append(
                {
                    "trial": t.number,
                    "folder": f"trial-{t.number}",
                    "plan": t.user_attrs.get(PLAN_TEXT_ATTR, ""),
                    "size_bytes": record["measured"].get("size_bytes"),
                    "search_val_accuracy": t.user_attrs.get("accuracy"),
                    "search": final.get("search"),
                    "final": final.get("final"),
                    "final_steps": final.get("steps", 0),
                    "test_accuracy": record["test_accuracy"],
                }
            )
        tuned = [r for r in rows if r["final"]]
        rho: dict[str, Any] = {"plans": len(tuned), "spearman": None, "kendall": None}
        if len(tuned) >= 3:
            a = [r["search"]["val_accuracy"] for r in tuned]
            b = [r["final"]["test_accuracy"] for r in tuned]
            if len(set(a)) > 1 and len(set(b)) > 1:
                rho.update(
                    spearman=round(float(spearmanr(a, b).statistic), 4),
                    kendall=round(float(kendalltau(a, b).statistic), 4),
                )
        rho["of"] = "search-time validation accuracy against final test accuracy, fine-tuned plans only"
        summary = {
            "format": FRONT_FORMAT,
            "version": 1,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "finetune_steps": finetune_steps,
            "trials": rows,
            "rank_correlation": rho,
        }
        with open(os.path.join(tmp, FRONT_FILE), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
            f.write("\n")
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _accuracies(val: float, n_val: int, test: float, n_test: int) -> dict[str, Any]:
    """Validation and test accuracy with their exact 95 % (Clopper-Pearson) intervals."""
    from tradeoff.search.trial.measure.accuracy import binomial_interval

    return {
        "val_accuracy": round(float(val), 6),
        "val_interval": [round(v, 6) for v in binomial_interval(round(val * n_val), n_val)],
        "test_accuracy": round(float(test), 6),
        "test_interval": [round(v, 6) for v in binomial_interval(round(test * n_test), n_test)],
    }


# -- the manifest and reading its JSON files ---------------------------------------------------


def write_manifest(folder: str) -> None:
    """manifest.json: the size and SHA-256 of every other file in ``folder``."""
    files = {}
    for name in sorted(n for n in os.listdir(folder) if n != MANIFEST_FILE):
        path = os.path.join(folder, name)
        files[name] = {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}
    with open(os.path.join(folder, MANIFEST_FILE), "w") as f:
        json.dump({"format": MANIFEST_FORMAT, "version": 1, "files": files}, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: str, what: str) -> Any:
    """A JSON file of an export, refused when it is not a plain file, too large or not JSON."""
    if os.path.islink(path) or not os.path.isfile(path):
        raise ExportError(f"{path} is missing or not a plain file; export the trial again")
    if os.path.getsize(path) > MAX_JSON_BYTES:
        raise ExportError(f"{path} is larger than any {what} tradeoff writes; it is not a tradeoff export")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ExportError(
            f"{path} is corrupt or truncated ({type(e).__name__}); export the trial again"
        ) from None
