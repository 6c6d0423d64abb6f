"""Export one trial as a deployable model directory, and load or verify such a directory.

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

``load`` checks every file against the record before it loads anything.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import optuna
import torch
from torch import nn

from tradeoff.search.errors import UsageError
from tradeoff.search.figures import FIGURES
from tradeoff.search.measure import Measurement, accuracy, deploy
from tradeoff.spaces.runtimes import get_runtime, runtime_for_file, version
from tradeoff.spaces.runtimes.onnx import ONNX_FILE, TORCHSCRIPT_FILE, ExternalData
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
            manifest = _read_json(manifest_path, "manifest")
            if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
                return False
            listed = manifest.get("files")
            return isinstance(listed, dict) and entries <= {MANIFEST_FILE, *map(str, listed)}
        record = _read_json(os.path.join(folder, RECORD_FILE), "record")
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
        summary = _read_json(os.path.join(folder, FRONT_FILE), "front summary")
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
    from tradeoff.search.measure.accuracy import differ_beyond_noise
    from tradeoff.search.records import CONFIG_ATTR, INT8_FORM_ATTR, TEACHER_ATTR, constraints_of, feasible
    from tradeoff.search.report import baseline_of
    from tradeoff.spaces import format_plan

    check_target(out_dir, force, protected=protected)
    plan = runner.plan_of(trial.params)
    task = runner.task
    from tradeoff.search.runner import baseline_latency

    log(f"restoring trial #{trial.number} ({format_plan(plan)}) ...")
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

    from tradeoff.search.records import PLAN_TEXT_ATTR

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
    from tradeoff.search.measure.accuracy import binomial_interval

    return {
        "val_accuracy": round(float(val), 6),
        "val_interval": [round(v, 6) for v in binomial_interval(round(val * n_val), n_val)],
        "test_accuracy": round(float(test), 6),
        "test_interval": [round(v, 6) for v in binomial_interval(round(test * n_test), n_test)],
    }


# -- loading --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Exported:
    model: torch.jit.ScriptModule
    record: dict[str, Any]
    path: str


def write_manifest(folder: str) -> None:
    """manifest.json: the size and SHA-256 of every other file in ``folder``."""
    files = {}
    for name in sorted(n for n in os.listdir(folder) if n != MANIFEST_FILE):
        path = os.path.join(folder, name)
        files[name] = {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}
    with open(os.path.join(folder, MANIFEST_FILE), "w") as f:
        json.dump({"format": MANIFEST_FORMAT, "version": 1, "files": files}, f, indent=2, sort_keys=True)
        f.write("\n")


def _read_json(path: str, what: str) -> Any:
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


def _check_file(folder: str, name: str, info: Any) -> None:
    path = os.path.join(folder, name)
    if not isinstance(info, dict):
        raise ExportError(f"the manifest's entry for {name!r} is not a size and a SHA-256")
    if os.path.islink(path) or not os.path.isfile(path):
        raise ExportError(f"{path} is missing or not a plain file; export the trial again")
    size = os.path.getsize(path)
    if size != info.get("bytes"):
        raise ExportError(
            f"{path} is {size} bytes, the manifest says {info.get('bytes')}: truncated or replaced"
        )
    if sha256_file(path) != info.get("sha256"):
        raise ExportError(f"{path} does not match its SHA-256 in the manifest: it was changed")


def read_record(path: str) -> dict[str, Any]:
    """The export's record, after every file is checked: the manifest lists exactly the files
    in the directory (none missing, none extra, no links), each with its size and SHA-256.
    Exports of format 1 (no manifest) are checked as they were written: model.pt and
    model.onnx against the record."""
    if not os.path.isdir(path):
        raise ExportError(f"{path} is not an export directory (it does not exist or is not a directory)")
    manifest_path = os.path.join(path, MANIFEST_FILE)
    if not os.path.lexists(manifest_path):
        return _read_record_v1(path)
    manifest = _read_json(manifest_path, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{manifest_path} is not a tradeoff export manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ExportError(f"{manifest_path} lists no files")
    for name in files:
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or os.sep in name:
            raise ExportError(f"{manifest_path} names {name!r}, which is not a file of the export directory")
    present = set(os.listdir(path)) - {MANIFEST_FILE}
    missing, extra = sorted(set(files) - present), sorted(present - set(files))
    if missing:
        raise ExportError(
            f"{path} is missing {', '.join(missing)}, which its manifest lists; export the trial again"
        )
    if extra:
        raise ExportError(
            f"{path} holds {', '.join(extra)}, which its manifest does not list: it was changed"
        )
    for required in (PLAN_FILE, RECORD_FILE):
        if required not in files:
            raise ExportError(f"{manifest_path} lists no {required}")
    if MODEL_FILE not in files and ONNX_FILE not in files:
        raise ExportError(f"{manifest_path} lists no model ({MODEL_FILE} or {ONNX_FILE})")
    for name, info in files.items():
        _check_file(path, name, info)
    record = _read_json(os.path.join(path, RECORD_FILE), "record")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ExportError(f"{os.path.join(path, RECORD_FILE)} is not a tradeoff export record")
    if _version(record) > EXPORT_VERSION:
        raise ExportError(
            f"{path} was exported by a newer tradeoff (format {record['version']}); upgrade tradeoff"
        )
    if deployed_file(record) not in files:
        raise ExportError(
            f"{manifest_path} lists no {deployed_file(record)}, the file the record says was measured"
        )
    return record


def deployed_file(record: dict[str, Any]) -> str:
    """The file that was measured: model.onnx or model.pt (exports before format 3: model.pt)."""
    name = record.get("deployed_file", MODEL_FILE)
    if name not in (MODEL_FILE, ONNX_FILE):
        raise ExportError(f"the export's record.json names {name!r} as its model: not a file tradeoff writes")
    return name


def _version(record: dict[str, Any]) -> int:
    version = record.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ExportError(f"the export's record.json holds version {version!r}: not a tradeoff export")
    return version


def _read_record_v1(path: str) -> dict[str, Any]:
    record_path = os.path.join(path, RECORD_FILE)
    if not os.path.lexists(record_path):
        raise ExportError(f"{path} is not a tradeoff export: {RECORD_FILE} is missing")
    record = _read_json(record_path, "record")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ExportError(f"{record_path} is not a tradeoff export record")
    if _version(record) != 1:
        raise ExportError(f"{path} has no {MANIFEST_FILE}; export the trial again")
    files = record.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise ExportError(f"{record_path} lists no {MODEL_FILE}")
    for name, info in files.items():
        if name not in (MODEL_FILE, ONNX_FILE):
            raise ExportError(f"{record_path} names {name!r}, which is not a file of a format-1 export")
        _check_file(path, name, info)
    return record


def load(path: str) -> Exported:
    """Load an export made by ``tradeoff export``: the record and every file are checked first,
    then the measured model is loaded: model.pt in TorchScript's own format (no Python pickle,
    so no arbitrary code runs on load; needs only torch), or model.onnx in onnxruntime (a
    protobuf of operators, refused when it points at external data files)."""
    record = read_record(path)
    name = deployed_file(record)
    file = os.path.join(path, name)
    try:
        model = _read_model(file)
        with torch.no_grad():
            model(torch.zeros(1, *record["task"]["input_shape"][1:]))  # a session starts now
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ExportError(
            f"{file} does not load: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    return Exported(model=model.eval(), record=record, path=path)


def _read_model(file: str) -> nn.Module:
    """The model file ``file`` (model.pt or model.onnx), read by the runtime that writes it; an
    ONNX file that points at external data files is refused (a path inside an export must never
    make us read a file outside it)."""
    try:
        return runtime_for_file(os.path.basename(file)).read(file).eval()
    except ExternalData as e:
        raise ExportError(str(e)) from None


def _test_data(path: str, record: dict[str, Any], data: str | None, data_root: str | None = None):
    """The data to verify on: ``data`` from the command line, else the export's data when it is
    a bundled task. Nothing named inside an export (a folder path, a plug-in) is opened or
    imported: an export is something people download and pass around."""
    from tradeoff.search.data import NORMALIZATIONS, TASKS, load_data

    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    spec = data
    if spec is None:
        stored = config.get("task")
        if stored not in TASKS:
            raise ExportError(
                f"{path} was made on data that is not bundled with tradeoff; give its data with --data "
                "(verify never opens a path or imports a plug-in named inside an export)"
            )
        spec = stored
    image_size, normalize, seed = (
        config.get("image_size"),
        config.get("normalize", "data"),
        config.get("seed", 0),
    )
    if image_size is not None and not (isinstance(image_size, int) and 8 <= image_size <= 1024):
        raise ExportError(f"{path}: record.json holds image_size {image_size!r}, not 8 to 1024 pixels")
    if normalize not in NORMALIZATIONS or not (isinstance(seed, int) and seed >= 0):
        raise ExportError(f"{path}: record.json holds settings no tradeoff writes (normalize, seed)")
    return load_data(spec, seed=seed, image_size=image_size, normalize=normalize, data_root=data_root)


def verify(path: str, *, data: str | None = None, data_root: str | None = None, log=print) -> list[str]:
    """Check every file of the export against its manifest, load the model, re-run the test
    split of ``data`` (default: the export's bundled task) and check output shape, accuracy and
    the ONNX twin against the record; the list of problems (empty when everything holds).
    What this cannot prove: that an export rewritten together with its manifest is the one the
    study made (see the README's Security section)."""
    exported = load(path)
    record = exported.record
    t = record.get("task") if isinstance(record.get("task"), dict) else {}
    test = _test_data(path, record, data, data_root)
    problems = []
    want = t.get("data_fingerprint")
    if want and test.fingerprint() != want:
        return [f"the data given differ from the export's (data fingerprint {test.fingerprint()} vs {want})"]
    num_classes = t.get("num_classes")
    with torch.no_grad():
        out = exported.model(test.test.x[:2])
    if tuple(out.shape) != (2, num_classes):
        problems.append(f"output shape {tuple(out.shape)}, expected (2, {num_classes})")
        return problems
    acc = accuracy(exported.model, test.test.x, test.test.y)
    recorded = float(record.get("test_accuracy", -1.0))
    log(f"test accuracy {acc:.2%} (record: {recorded:.2%}) on {len(test.test)} images")
    if abs(acc - recorded) * len(test.test) > 1.0 + 1e-9:
        problems.append(f"test accuracy {acc:.4f}, the record says {recorded:.4f}")
    name = deployed_file(record)
    log(
        f"model file {name} {os.path.getsize(os.path.join(path, name))} bytes, SHA-256 checked; the study "
        "measured size_bytes and the other figures in record.json, which verify does not re-measure"
    )
    twin = MODEL_FILE if name == ONNX_FILE else ONNX_FILE
    if os.path.isfile(os.path.join(path, twin)):
        try:
            other = _read_model(os.path.join(path, twin))
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - a file that is not what its name says
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            problems.append(
                f"{twin} does not load as {'ONNX' if twin == ONNX_FILE else 'TorchScript'}: {first}"
            )
            return problems
        with torch.no_grad():
            ours = exported.model(test.test.x).argmax(1).numpy()
            theirs = other(test.test.x).argmax(1).numpy()
        mismatches = int((ours != theirs).sum())
        log(f"{twin} top-1 matches {name} on {len(ours) - mismatches} of {len(ours)} images")
        if mismatches:
            problems.append(f"{twin} top-1 differs from {name} on {mismatches} test images")
    return problems
