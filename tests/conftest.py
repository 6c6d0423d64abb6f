from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """One teacher cache for the whole session (subprocesses inherit it), never ~/.cache."""
    path = tmp_path_factory.mktemp("tradeoff-cache")
    old = os.environ.get("TRADEOFF_CACHE")
    os.environ["TRADEOFF_CACHE"] = str(path)
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    torch.set_flush_denormal(True)
    yield path
    if old is None:
        os.environ.pop("TRADEOFF_CACHE", None)
    else:
        os.environ["TRADEOFF_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_task():
    from search.tasks import get_task

    return get_task("digits", "tiny_resnet")


@pytest.fixture(scope="session")
def tiny_teacher(tiny_task):
    from search.teacher import train_teacher

    model, _, _ = train_teacher(tiny_task, log=lambda _m: None)
    return model
