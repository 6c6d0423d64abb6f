"""Bring your own model and data, end to end through the real `tradeoff` command: an image folder
searched with a torchvision model, an export that loads with torch alone, plug-ins, and a
changed data set refused by its study."""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import torch
from PIL import Image

FAST = ["--finetune-steps", "10", "--student-steps", "20", "--latency-repeats", "5", "--teacher-epochs", "15"]


def test_image_folder_with_a_torchvision_model_then_export(tmp_path, cli, make_folder):
    make_folder(tmp_path / "shapes", n=15, size=36)
    # mobilenet_v3_small per layer (the default: its sensitivity pass and allocated plans on a
    # torchvision model with depthwise layers; every torchvision family's knobs are tested in
    # process by tests/test_spaces/test_architectures.py)
    # (int8 alone: one bit-width variant per trained structure, which each run measures before it stops)
    model = "mobilenet_v3_small"
    r = cli(
        "search", "--data", "shapes", "--model", model, "--image-size", "32", "--n-trials", "3",
        "--study-name", model, "--space", "weight_bits=32,8", *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "[3/3]" in r.stderr and f"{model} on {tmp_path / 'shapes'}" in r.stderr
    r = cli("export", "--study-name", "mobilenet_v3_small", "--trial", "0", "-o", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["task"]["classes"] == ["circle", "square", "stripes"]
    assert record["task"]["input_shape"] == [1, 3, 32, 32]

    # the exported model needs torch alone: no tradeoff class, no pickle
    model = torch.jit.load(str(tmp_path / "out" / "model.pt"))
    img = np.asarray(
        Image.open(next((tmp_path / "shapes" / "circle").iterdir())).convert("RGB").resize((32, 32))
    )
    x = torch.tensor(img).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    with torch.no_grad():
        scores = model(x)
    assert scores.shape == (1, 3) and torch.isfinite(scores).all()
    # the data come from the command line: verify never opens a path named inside an export
    v = cli("verify", "out", cwd=tmp_path)
    assert v.returncode == 2 and "give its data with --data" in v.stderr
    v = cli("verify", "out", "--data", "shapes", cwd=tmp_path)
    assert v.returncode == 0, v.stderr

    # the same study on changed data: refused, nothing stored changes
    db_before = (tmp_path / "tradeoff.db").read_bytes()
    Image.fromarray(np.zeros((36, 36, 3), np.uint8)).save(tmp_path / "shapes" / "circle" / "extra.png")
    r = cli("search", "--study-name", "mobilenet_v3_small", "--n-trials", "1", cwd=tmp_path)
    assert r.returncode == 2 and "differs from the study's (fingerprint" in r.stderr, r.stderr
    assert "refusing to join" in r.stderr and r.stderr.strip().splitlines()[-1].startswith("tradeoff: error:")
    assert (tmp_path / "tradeoff.db").read_bytes() == db_before


PLUGINS = """
import torch
from torch import nn

def net(num_classes, in_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

def splits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    return (x[:1000], y[:1000]), (x[1000:1400], y[1000:1400]), (x[1400:], y[1400:])
"""


def test_plugins_through_the_command_line(tmp_path, cli):
    (tmp_path / "my_project.py").write_text(textwrap.dedent(PLUGINS))
    r = cli(
        "search", "--data", "my_project:splits", "--model", "my_project:net", "--n-trials", "2", *FAST,
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "teacher ready" in r.stderr and "[2/2]" in r.stderr

    bad = cli("search", "--data", "my_project:nope", "--study-name", "other", cwd=tmp_path)
    assert bad.returncode == 2 and "my_project has no function 'nope'" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0


def test_bad_data_leaves_no_study_behind(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    r = cli("search", "--data", "empty", "--model", "tiny_resnet", cwd=tmp_path)
    assert r.returncode == 2 and "has no class sub-folders" in r.stderr
    r = cli("search", "--model", "tiny_resnet", "--n-trials", "1", "--finetune-steps", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # the failed attempt did not leave a study with its settings
    shutil.rmtree(tmp_path / "empty")
