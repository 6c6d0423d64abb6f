"""Load or verify a directory ``tradeoff export`` wrote (``search.views.export`` writes it).

``load`` checks every file against the manifest and the record before it loads anything, then
reads the measured model with the runtime that writes that file (model.pt: TorchScript's own
format, no Python pickle; model.onnx: a protobuf of operators, refused when it points at
external data files). ``verify`` loads it, tests it again on the task's test split, and checks
its twin (the other file) gives the same top-1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tradeoff.search.trial.measure import accuracy
from tradeoff.search.views.export import (
    EXPORT_VERSION,
    FORMAT,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MODEL_FILE,
    ONNX_FILE,
    PLAN_FILE,
    RECORD_FILE,
    ExportError,
    read_json,
)
from tradeoff.spaces.runtimes import runtime_for_file
from tradeoff.spaces.runtimes.onnx import ExternalData
from tradeoff.storage.artifacts import sha256_file


@dataclass(frozen=True, eq=False)
class Exported:
    model: torch.jit.ScriptModule
    record: dict[str, Any]
    path: str


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
    manifest = read_json(manifest_path, "manifest")
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
    record = read_json(os.path.join(path, RECORD_FILE), "record")
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
    record = read_json(record_path, "record")
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
    from tradeoff.search.task.data import NORMALIZATIONS, TASKS, load_data

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
