from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
import sqlalchemy
import torch

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# pytest-xdist runs the suite in parallel processes (`-n`, set in pyproject.toml): each takes its
# share of the cores, as a tradeoff worker does, and registers as one so that the `tradeoff`
# commands the tests start divide the cores with it
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """One teacher cache for the whole run (subprocesses and parallel test processes share it:
    checkpoints are written atomically), never ~/.cache."""
    if WORKERS > 1:
        path = tmp_path_factory.getbasetemp().parent / "tradeoff-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("tradeoff-cache")
    old = os.environ.get("TRADEOFF_CACHE")
    os.environ["TRADEOFF_CACHE"] = str(path)
    # no dashboard notes but where a test asks (run_tradeoff's `notes`): they cost a second a command
    os.environ["TRADEOFF_DASHBOARD_NOTES"] = "0"
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORKERS))
    torch.set_flush_denormal(True)
    with contextlib.ExitStack() as stack:
        if WORKERS > 1:
            from tradeoff.search.study.worker import host_share

            stack.enter_context(host_share())
        yield path
    if old is None:
        os.environ.pop("TRADEOFF_CACHE", None)
    else:
        os.environ["TRADEOFF_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_task():
    from tradeoff.search.task.tasks import get_task

    return get_task("digits", "tiny_resnet")


@pytest.fixture(scope="session")
def tiny_teacher(tiny_task):
    from tradeoff.search.task.teacher import train_teacher

    model, _, _ = train_teacher(tiny_task, log=lambda _m: None)
    return model


_PG_SEEN = False


def _postgres_up() -> bool:
    """Whether the PostgreSQL server answers. Once it has answered in this process (or in CI,
    where it must be there), a refusal is waited out for up to 2 minutes: a test in another
    process restarts the server (test_workers_ride_out_a_database_restart), and a test must not
    fail because it looked during those seconds."""
    global _PG_SEEN
    deadline = time.monotonic() + (120 if (_PG_SEEN or os.environ.get("CI")) else 0)
    while True:
        engine = sqlalchemy.create_engine(PG_ADMIN, connect_args={"connect_timeout": 3})
        try:
            engine.connect().close()
            _PG_SEEN = True
            return True
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                return False
            time.sleep(1)
        finally:
            engine.dispose()


def _postgres_database():
    """A fresh database on the real PostgreSQL server, dropped afterwards; CI must have one."""
    if not _postgres_up():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432; .ci/run should have started it")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"tradeoff_test_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with engine.connect() as c:
        c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    # the drop can fall in another process's restart of the server too ("the database system is
    # shutting down"): wait the restart out and drop again
    for attempt in range(5):
        try:
            with engine.connect() as c:
                c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            break
        except sqlalchemy.exc.OperationalError:
            if attempt == 4 or not _postgres_up():
                raise
    engine.dispose()


@pytest.fixture
def pg_url():
    """A fresh database on the real PostgreSQL server."""
    yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """Every study-touching test runs on both storages, as Optuna's own tests do: a real SQLite
    file and a fresh database on the real PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def sqlite_url(tmp_path):
    """A real SQLite file, for a test whose subject is not the storage (the command line's own
    flow on the default database); the storage's behaviour is tested on both."""
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def proxy_url(pg_url, tmp_path):
    """``tradeoff proxy`` (a real process) serving a fresh PostgreSQL database: its grpc:// URL,
    with the database's own URL as ``.database``."""
    yield from serve_proxy(pg_url, tmp_path / "proxy.log")


def serve_proxy(database: str, log_path):
    """Start ``tradeoff proxy`` on ``database`` on a free port, wait until it answers, yield its
    URL (a :class:`ProxyURL`), stop it."""
    import socket
    import subprocess
    import sys
    import time

    from tradeoff.storage import open_storage

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff.search.cli", "proxy", "--storage", database, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = ProxyURL(f"grpc://127.0.0.1:{port}")
    url.database = database
    deadline = time.monotonic() + 300  # the proxy imports Optuna and gRPC; a busy machine is slow
    while True:
        try:
            open_storage(url, heartbeat_interval=None, connect_timeout_s=2).get_all_studies()
            break
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the proxy did not start: {open(log_path).read()}") from None
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait()
    log.close()


class ProxyURL(str):
    database: str


@pytest.fixture
def postgres_url():
    """A fresh database on the real PostgreSQL server: the storage of a fleet of workers, for a
    test of what such a fleet does that is not storage-specific."""
    yield from _postgres_database()


QUICK = [
    "--model",
    "tiny_resnet",
    "--finetune-steps",
    "20",
    "--student-steps",
    "40",
    "--latency-repeats",
    "5",
    "--sampler",  # single-technique plans first: cheaper than auto's Latin-hypercube mixes
    "tpe",
]


# the quickest settings that still run every step: for tests that check plumbing, not figures
# (one value per knob: the per-layer allocation has tests of its own, and the default run; int8
# alone: one bit-width variant per trained structure, which every run measures before it stops;
# sub-8-bit plans have tests of their own, and QUICK keeps them)
QUICKER = [
    "--space",
    "weight_bits=32,8",
    "--granularity",
    "global",
    "--model",
    "tiny_resnet",
    "--finetune-steps",
    "5",
    "--student-steps",
    "10",
    "--latency-repeats",
    "3",
    "--sampler",
    "tpe",
]


def run_tradeoff(*args: str, cwd, timeout: float = 300, notes: bool = False) -> subprocess.CompletedProcess:
    """The real `tradeoff` command in a subprocess, with the session's teacher cache; the
    dashboard's notes are written only where ``notes`` (importing optuna-dashboard costs every
    command about a second; tests/test_dashboard.py reads them from the finished study)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", TRADEOFF_DASHBOARD_NOTES="1" if notes else "0")
    env.pop("TRADEOFF_STORAGE", None)
    return subprocess.run(
        [sys.executable, "-m", "tradeoff.search.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def cli():
    return run_tradeoff


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory):
    """A small finished study on a real SQLite file: 8 trials of tiny_resnet on digits (the
    baseline, the four single-technique plans and three TPE plans). Read-only for tests; made
    once for all the parallel test processes (under a file lock)."""
    from filelock import FileLock

    if WORKERS == 1:
        path = tmp_path_factory.mktemp("finished-study")
    else:
        path = tmp_path_factory.getbasetemp().parent / "finished-study"
    done = path / "made"
    with FileLock(str(path) + ".lock"):
        if not done.exists():
            path.mkdir(exist_ok=True)
            # --sampler tpe: the baseline and the four single-technique plans first (the report marks them)
            r = run_tradeoff("search", "--n-trials", "8", *QUICK, cwd=path, notes=True)
            assert r.returncode == 0, r.stderr
            done.touch()
    return path


def _make_image_folder(root, classes=("circle", "square", "stripes"), n=12, size=20, seed=0):
    """Generated images in torchvision's ImageFolder layout, one pattern per class, as PNG and
    JPEG files."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            mask = [
                (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2,
                (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4),
                (yy // 3) % 2 == 0,
            ][c % 3]
            img[mask] = [200, 180, 40]
            Image.fromarray(img).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="session")
def make_folder():
    return _make_image_folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``url`` answers 200 (a server ``proc`` is starting); fail if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"server did not answer {url} in {timeout} s")


@contextlib.contextmanager
def dashboard_server(cwd, *args: str):
    """`tradeoff dashboard ARGS` on a free port in a subprocess; yields its base URL once it
    answers, and stops it afterwards."""
    port = free_port()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("TRADEOFF_STORAGE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff.search.cli", "dashboard", *args, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/studies", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
