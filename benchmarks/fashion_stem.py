"""The Fashion-MNIST teacher with another stem, same recipe and epochs: a 3x3 stride-1 first conv
and a 2x2 max-pool (features at full resolution, pooled to 14x14 for the first block) instead of
the task's 7x7 stride-2 conv without a pool. An experiment for the teacher's recipe (issue 25):
the task still builds the strided stem.

    python benchmarks/fashion_stem.py   # about 33 min on 2 cores; results/fashion-teacher-pooled-stem.json
"""

import json
import os
import time

import torch
from torch import nn

from tradeoff.search.task.tasks import get_task
from tradeoff.search.task.training import train_classifier
from tradeoff.search.trial.measure import accuracy
from tradeoff.search.trial.measure.accuracy import binomial_interval

torch.set_num_threads(os.cpu_count() or 1)
torch.set_flush_denormal(True)
task = get_task("fashion-mnist", "resnet18")
torch.manual_seed(task.seed)
model = task.build()
model.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
model.maxpool = nn.MaxPool2d(2)
t0 = time.perf_counter()
check = task.val.x[:2000], task.val.y[:2000]


def on_epoch(epoch, loss, m):
    acc = accuracy(m, *check)
    print(f"epoch {epoch}: loss {loss:.3f}, val2000 {acc:.4f}, {time.perf_counter() - t0:.0f} s", flush=True)


model = train_classifier(model, task.train, epochs=10, seed=task.seed, on_epoch=on_epoch, **task.recipe)
secs = time.perf_counter() - t0
out = {
    "stem": "conv3x3 s1 + maxpool 2x2",
    "epochs": 10,
    "recipe": task.recipe,
    "train_seconds": round(secs, 1),
}
for split in ("val", "test"):
    s = getattr(task, split)
    a = accuracy(model, s.x, s.y)
    out[f"{split}_accuracy"] = a
    out[f"{split}_interval"] = binomial_interval(round(a * len(s)), len(s))
print(json.dumps(out, indent=1), flush=True)
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fashion-teacher-pooled-stem.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
