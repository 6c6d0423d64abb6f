"""The fashion-mnist task: Debian's IDX files read gzipped or not, from the package's folder or
one the user names; the one-line error without them; a search on a slice of the real data."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
from conftest import QUICKER, run_tradeoff

from tradeoff.search.errors import UsageError
from tradeoff.search.task import data as data_module
from tradeoff.search.task.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_FILES, read_idx
from tradeoff.search.task.models import resnet18
from tradeoff.search.task.tasks import get_task

HAVE_PACKAGE = os.path.isfile(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz"))
needs_package = pytest.mark.skipif(
    not HAVE_PACKAGE, reason="apt-get install dataset-fashion-mnist (.ci/run installs it)"
)


def _idx_bytes(array: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_slice(folder, *, train: int = 360, test: int = 120, gz: bool = True) -> None:
    """The first ``train`` training and ``test`` test images of Debian's files, as IDX files."""
    os.makedirs(folder, exist_ok=True)
    for key, name in FASHION_MNIST_FILES.items():
        array = read_idx(os.path.join(FASHION_MNIST_DIR, name + ".gz"))
        array = np.ascontiguousarray(array[: train if key.startswith("train") else test])
        raw = _idx_bytes(array)
        if gz:
            with open(os.path.join(folder, name + ".gz"), "wb") as f:
                f.write(gzip.compress(raw, mtime=0))
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(raw)


def test_idx_reader_reads_what_was_written_gzipped_or_not(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    (tmp_path / "raw").write_bytes(_idx_bytes(images))
    (tmp_path / "z.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    assert np.array_equal(read_idx(str(tmp_path / "raw")), images)
    assert np.array_equal(read_idx(str(tmp_path / "z.gz")), images)
    (tmp_path / "short").write_bytes(_idx_bytes(images)[:-5])
    with pytest.raises(UsageError, match="cut short"):
        read_idx(str(tmp_path / "short"))
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(UsageError, match="not an IDX file"):
        read_idx(str(tmp_path / "png"))
    (tmp_path / "broken.gz").write_bytes(gzip.compress(_idx_bytes(images))[:40])
    with pytest.raises(UsageError, match="broken gzip"):
        read_idx(str(tmp_path / "broken.gz"))


@needs_package
def test_a_slice_loads_the_same_from_gzipped_and_plain_files(tmp_path):
    write_slice(tmp_path / "gz", gz=True)
    write_slice(tmp_path / "plain", gz=False)
    a = get_task("fashion-mnist", "tiny_resnet", data_root=str(tmp_path / "gz"))
    b = get_task("fashion-mnist", "tiny_resnet", data_root=str(tmp_path / "plain"))
    assert a.fingerprint() == b.fingerprint() and a.data_fingerprint() == b.data_fingerprint()
    # one in twelve of the training images held out per class; the official test split kept whole
    assert len(a.train) + len(a.val) == 360 and 25 <= len(a.val) <= 35 and len(a.test) == 120
    assert a.classes == FASHION_MNIST_CLASSES and a.num_classes == 10
    assert a.train.x.shape[1:] == (1, 28, 28)
    assert abs(float(a.train.x.mean())) < 1e-4 and abs(float(a.train.x.std()) - 1) < 1e-3
    assert set(torch.unique(a.val.y).tolist()) == set(torch.unique(a.train.y).tolist())  # per class
    # the task's recipe decides the teacher: in its fingerprint, as the pooled stem is
    assert a.settings["stem"] == "pooled" and "flip=True" in a.settings["teacher_recipe"]


@needs_package
def test_the_resnet18_teacher_takes_28px_in_at_14x14():
    task = get_task("fashion-mnist", "resnet18")
    model = task.build()
    # the pooled stem: a 3x3 stride-1 conv at full resolution, then a 2x2 max-pool to 14x14
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d)
    stem = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    assert stem(torch.zeros(1, 1, 28, 28)).shape == (1, 64, 14, 14)
    assert len(task.train) == 55_000 and len(task.val) == 5_000 and len(task.test) == 10_000
    assert len(task.finetune) == 10_000  # trials fine-tune on a fixed stratified sample
    counts = torch.bincount(task.finetune.y, minlength=10)
    assert int(counts.min()) >= 950 and int(counts.max()) <= 1050
    digits = get_task("digits", "resnet18").build()  # the bundled default keeps its own stem
    assert digits.conv1.stride == (1, 1) and isinstance(digits.maxpool, torch.nn.Identity)
    with pytest.raises(UsageError, match="unknown stem 'wide': choose one of auto, small, strided, pooled"):
        resnet18(1, 28, 10, stem="wide")


def test_without_the_files_the_error_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match=r"apt-get install dataset-fashion-mnist"):
        get_task("fashion-mnist", "tiny_resnet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"--data-root .*empty lacks train-images-idx3-ubyte"):
        get_task("fashion-mnist", "tiny_resnet", data_root=str(tmp_path / "empty"))


def test_cli_without_the_files_exits_2_with_one_line_and_stores_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_tradeoff("search", "--task", "fashion-mnist", "--data-root", "empty", *QUICKER, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "dataset-fashion-mnist" in lines[0], r.stderr
    if (tmp_path / "tradeoff.db").exists():  # the storage may be opened first; no study is stored
        import optuna

        assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'tradeoff.db'}") == []
    r = run_tradeoff("search", "--data-root", "empty", *QUICKER, cwd=tmp_path)  # digits reads no root
    assert r.returncode == 2 and "--data-root is for --data fashion-mnist" in r.stderr


@needs_package
def test_a_search_on_a_slice_runs_to_a_front_and_shows_the_teachers_progress(tmp_path):
    write_slice(tmp_path / "fm", gz=False)
    r = run_tradeoff(
        "search",
        "--task",
        "fashion-mnist",
        "--data-root",
        "fm",
        "--n-trials",
        "1",
        "--teacher-epochs",
        "2",
        *QUICKER,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    epochs = [line for line in r.stderr.splitlines() if line.startswith("teacher: epoch")]
    assert len(epochs) == 2 and "epoch 2/2, loss" in epochs[1] and "left" in epochs[1], r.stderr
    assert "sensitivity" not in r.stderr  # --granularity global measures no table
    assert "accuracy" in r.stdout  # the front
    # the study keeps where its data lie: a worker reads the same folder
    import optuna

    from tradeoff.search.study.records import CONFIG_ATTR

    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}")
    assert f'"data_root": "{tmp_path / "fm"}"' in study.user_attrs[CONFIG_ATTR]
