"""User data and models: image folders, plug-ins, checkpoints, and their one-line errors."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from tradeoff.search.errors import UsageError
from tradeoff.search.task.tasks import get_task


def test_flat_folder_is_split_60_20_20_per_class_and_normalised(tmp_path, make_folder):
    make_folder(tmp_path / "data")
    (tmp_path / "data" / "circle" / "README.txt").write_text("not an image")
    (tmp_path / "data" / "square" / "broken.png").write_bytes(b"not a png")
    notes = []
    task = get_task(str(tmp_path / "data"), "tiny_resnet", image_size=16, log=notes.append)
    assert task.classes == ("circle", "square", "stripes") and task.num_classes == 3
    # 12 a class: round(0.6 x 12) = 7 train, round(0.2 x 12) = 2 val, the other 3 test
    assert (len(task.train), len(task.val), len(task.test)) == (3 * 7, 3 * 2, 3 * 3)
    for split in (task.train, task.val, task.test):
        assert split.x.shape[1:] == (3, 16, 16)
        assert sorted(torch.bincount(split.y).tolist()) == [len(split) // 3] * 3  # stratified
    mean = task.train.x.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)  # the training split's own statistics
    assert notes == [
        f"data folder {tmp_path / 'data'}: skipped 1 files that are not images and 1 unreadable images"
    ]


def test_given_splits_are_kept_and_a_missing_one_is_cut_from_train(tmp_path, make_folder):
    make_folder(tmp_path / "d" / "train", n=10)
    make_folder(tmp_path / "d" / "test", n=4, seed=1)
    task = get_task(str(tmp_path / "d"), "tiny_resnet", image_size=16)
    assert len(task.test) == 12  # as given
    assert (len(task.train), len(task.val)) == (24, 6)  # val: 20 % of train per class


def test_fingerprint_follows_the_data_and_settings(tmp_path, make_folder):
    make_folder(tmp_path / "d")
    a = get_task(str(tmp_path / "d"), "tiny_resnet", image_size=16)
    assert get_task(str(tmp_path / "d"), "tiny_resnet", image_size=16).fingerprint() == a.fingerprint()
    assert get_task(str(tmp_path / "d"), "tiny_resnet", image_size=20).fingerprint() != a.fingerprint()
    assert get_task(
        str(tmp_path / "d"), "tiny_resnet", image_size=16, normalize="imagenet"
    ).fingerprint() != (a.fingerprint())
    assert get_task(str(tmp_path / "d"), "mobilenet_v3_small", image_size=16).fingerprint() != a.fingerprint()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "d" / "circle" / "new.png")
    assert get_task(str(tmp_path / "d"), "tiny_resnet", image_size=16).fingerprint() != a.fingerprint()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p, make_folder: None, "no such folder"),
        (lambda p, make_folder: p.mkdir(), "has no class sub-folders"),
        (
            lambda p, make_folder: ((p / "cat").mkdir(parents=True), (p / "dog").mkdir()),
            "class folder {p}/cat has no readable images",
        ),
        (
            lambda p, make_folder: (
                (p / "cat").mkdir(parents=True),
                (p / "dog").mkdir(),
                (p / "cat" / "a.png").write_bytes(b"junk"),
            ),
            "class folder {p}/cat has no readable images",
        ),
        (lambda p, make_folder: (p / "cat").mkdir(parents=True), "needs at least two class sub-folders"),
        (lambda p, make_folder: make_folder(p, n=2), "has too few images"),
        (lambda p, make_folder: (make_folder(p / "val"),), "has val/ but no train/"),
        (
            lambda p, make_folder: (
                make_folder(p / "train"),
                make_folder(p / "val", classes=("circle", "square")),
            ),
            "has other classes than",
        ),
        (lambda p, make_folder: p.write_text("x"), "not a directory"),
    ],
)
def test_bad_folders_are_one_line_errors(tmp_path, build, message, make_folder):
    path = tmp_path / "data"
    build(path, make_folder)
    with pytest.raises(UsageError) as e:
        get_task(str(path), "tiny_resnet", image_size=16)
    assert message.format(p=path) in str(e.value) and "\n" not in str(e.value)


def test_torchvision_model_by_name_fits_the_data(tmp_path):
    task = get_task("digits", "mobilenet_v3_small")  # 1 grey channel, 10 classes
    model = task.build()
    assert next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels == 1
    with torch.no_grad():
        assert model.eval()(task.val.x[:2]).shape == (2, 10)


PLUGIN = """
import torch
from torch import nn

def small(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))

def wrong_classes(in_channels):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(3))

def not_a_model(**kwargs):
    return 42

def broken():
    raise ValueError("no GPU here")

def splits():
    g = torch.Generator().manual_seed(0)
    def part(n):
        return torch.randn(n, 1, 6, 6, generator=g), torch.arange(n) % 4
    return {"train": part(40), "val": part(12), "test": torch.utils.data.TensorDataset(*part(12))}

def bad_splits():
    return [torch.zeros(3)]
"""


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "my_plugins.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return "my_plugins"


def test_plugins_for_model_and_data(plugin_module):
    task = get_task(f"{plugin_module}:splits", f"{plugin_module}:small")
    assert task.num_classes == 4 and task.train.x.shape == (40, 1, 6, 6) and len(task.test) == 12
    with torch.no_grad():
        assert task.build().eval()(task.val.x).shape == (12, 4)


@pytest.mark.parametrize(
    ("data", "model", "message"),
    [
        ("digits", "no_such_module:f", "cannot import no_such_module"),
        ("digits", "my_plugins:missing", "my_plugins has no function 'missing'"),
        ("digits", "my_plugins:not_a_model", "returned int, expected a torch.nn.Module"),
        ("digits", "my_plugins:broken", "raised ValueError: no GPU here"),
        (
            "digits",
            "my_plugins:wrong_classes",
            "gives outputs of shape (2, 3) for a batch of 2, but the data has 10",
        ),
        ("my_plugins:bad_splits", "tiny_resnet", "returned list; return (train, val, test)"),
        ("digits", "vgg99", "unknown model 'vgg99'"),
    ],
)
def test_bad_plugins_and_models_are_one_line_errors(plugin_module, data, model, message):
    with pytest.raises(UsageError) as e:
        get_task(data, model)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_checkpoints_load_weights_only_and_must_fit(tmp_path, tiny_teacher):
    task = get_task("digits", "tiny_resnet")
    model = tiny_teacher  # trained: an untrained checkpoint is refused as a teacher at chance
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pt")
    with_ckpt = get_task("digits", "tiny_resnet", checkpoint=str(tmp_path / "w.pt"))
    assert with_ckpt.fingerprint() != task.fingerprint()

    torch.save(get_task("digits", "mobilenet_v3_small").build().state_dict(), tmp_path / "other.pt")
    torch.save(model, tmp_path / "pickled-module.pt")  # a whole pickled module: not weights-only
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    for name, message in [
        ("other.pt", "does not fit tiny_resnet"),
        ("pickled-module.pt", "does not load as weights only"),
        ("junk.pt", "does not load as weights only"),
        ("missing.pt", "does not exist"),
    ]:
        with pytest.raises(UsageError) as e:
            get_task("digits", "tiny_resnet", checkpoint=str(tmp_path / name))
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_bundled_digits_are_scikit_learns_without_importing_it():
    from sklearn.datasets import load_digits

    from tradeoff.search.task.data import digits_arrays

    images, target = digits_arrays()
    d = load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, d.images)
    assert np.array_equal(target, d.target) and target.dtype.kind == "i"


def test_a_folder_is_read_once_per_file_regular_files_only_hidden_entries_skipped(tmp_path, make_folder):
    """A symlink loop is walked once, an image linked into two classes is read once (no leak
    across splits), a named pipe with an image name is never opened (it would hang), hidden
    folders are not classes, and a file name that is not UTF-8 still loads."""
    import os

    root = make_folder(tmp_path / "data", n=12)
    plain = get_task(str(root), "tiny_resnet", image_size=16)
    (root / "circle" / "loop").symlink_to(root / "circle")  # circle/loop/loop/... for ever
    (root / "square" / "again").symlink_to(root / "circle")  # the circles once more, as squares
    os.mkfifo(root / "stripes" / "pipe.png")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "x.png").write_bytes((root / "circle" / "1.png").read_bytes())
    (root / "stripes" / ".hidden.png").write_bytes((root / "circle" / "1.png").read_bytes())
    with open(os.path.join(os.fsencode(root / "stripes"), b"\xff\xfe.png"), "wb") as f:
        f.write((root / "stripes" / "1.png").read_bytes())
    notes = []
    task = get_task(str(root), "tiny_resnet", image_size=16, log=notes.append)
    assert task.classes == plain.classes == ("circle", "square", "stripes")
    sizes = [len(s.y) for s in (task.train, task.val, task.test)]
    assert sum(sizes) == sum(len(s.y) for s in (plain.train, plain.val, plain.test)) + 1  # the non-UTF-8 one
    assert any("2 linked folders or images lead to ones already read" in n for n in notes), notes
    assert any("1 unreadable images" in n for n in notes), notes  # the pipe
