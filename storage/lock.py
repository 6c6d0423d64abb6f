"""The study lock: one process at a time, across processes and hosts, for one study.

What holds the lock is the database the study lives in: a PostgreSQL advisory lock (or MySQL's
``GET_LOCK``) on a shared server, an ``flock`` on a file beside the SQLite database. The
worker loop takes it around "count the trials, then ask for one", which is what keeps a trial
budget exact with any number of workers. Reached through ``open_storage(...).lock(name)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Iterator

import sqlalchemy
import sqlalchemy.exc


def _key(study_name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"tradeoff:{study_name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def study_lock(
    engine: sqlalchemy.Engine, study_name: str, *, retry_for_s: float, transient
) -> Iterator[None]:
    """Exclusive for ``study_name`` while the body runs. A lost connection while taking the lock
    is retried for ``retry_for_s`` seconds (``transient(e)`` says which errors are)."""
    backend = engine.url.get_backend_name()
    key = _key(study_name)
    if backend == "sqlite":
        path = (engine.url.database or "tradeoff") + ".tradeoff-lock"
        with open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    if backend == "postgresql":
        lock, unlock = "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)"
    else:
        lock, unlock, key = "SELECT GET_LOCK(:k, 600)", "SELECT RELEASE_LOCK(:k)", str(key)
    deadline = time.monotonic() + retry_for_s
    while True:  # the database may be restarting: wait for it as the storage does
        conn = None
        try:
            conn = engine.connect()
            conn.execute(sqlalchemy.text(lock), {"k": key})
            break
        except sqlalchemy.exc.DBAPIError as e:
            if conn is not None:
                with contextlib.suppress(sqlalchemy.exc.DBAPIError):
                    conn.close()
            if not transient(e) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    with conn:
        try:
            yield
        finally:
            with contextlib.suppress(sqlalchemy.exc.DBAPIError):  # a lost connection released it
                conn.execute(sqlalchemy.text(unlock), {"k": key})
                conn.commit()
