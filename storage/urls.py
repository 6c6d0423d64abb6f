"""Resolve a storage URL into Optuna's RDBStorage.

The URL comes from ``--storage``, else ``$TRADEOFF_STORAGE``, else the file named by
``$TRADEOFF_STORAGE_FILE`` (so a password need not sit in a command line), else the embedded
default ``sqlite:///tradeoff.db`` in the working directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings

import optuna
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from tradeoff.storage.errors import StorageError
from tradeoff.storage.lock import study_lock

DEFAULT_URL = "sqlite:///tradeoff.db"
ENV_URL = "TRADEOFF_STORAGE"
ENV_URL_FILE = "TRADEOFF_STORAGE_FILE"

_SUPPORTED = ("sqlite", "postgresql", "mysql", "mariadb")
# the module SQLAlchemy imports for a URL's driver -> the package on the index that provides it
DRIVER_PACKAGES = {
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "mariadb": "mariadb",
    "psycopg2": "psycopg2-binary",
    "psycopg": "'psycopg[binary]'",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
}


def resolve_url(url: str | None = None) -> str:
    """The storage URL to use: the argument, else the environment, else the default."""
    if url:
        return url.strip()
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL].strip()
    path = os.environ.get(ENV_URL_FILE)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError as e:
            raise StorageError(f"cannot read ${ENV_URL_FILE} ({path}): {e.strerror}") from None
        if not text:
            raise StorageError(f"${ENV_URL_FILE} ({path}) is empty; write the storage URL in it")
        return text
    return DEFAULT_URL


# query parameters that hold a secret (libpq's and the MySQL drivers' names); a path to a key
# file (sslkey, sslcert) is not a secret
SECRET_PARAMETERS = frozenset({"password", "passwd", "pwd", "sslpassword", "secret", "token", "access_token"})


def redact(url: str) -> str:
    """The URL with every secret replaced by ``***``: the password of the user part (whatever
    characters it holds, an ``@`` included) and the value of any secret query parameter
    (``password=``, ``sslpassword=``, ...). Safe for logs, errors and stored attributes; works
    on malformed URLs too, since it never parses more than it must."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    location, qmark, query = rest.partition("?")
    at = location.rfind("@")  # the last @ ends the user part: a raw @ in a password stays inside
    if at >= 0 and not location.startswith("/"):  # sqlite:////path has no user part
        user, colon, _ = location[:at].partition(":")
        location = f"{user}{':***' if colon else ''}{location[at:]}"
    if qmark:
        parts = []
        for item in query.split("&"):
            key, eq, _ = item.partition("=")
            secret = key.strip().lower() in SECRET_PARAMETERS
            parts.append(f"{key}=***" if eq and secret else item)
        query = "&".join(parts)
    return f"{scheme}://{location}{qmark}{query}"


def secrets_in(url: str) -> list[str]:
    """Every secret string in ``url`` (what :func:`redact` hides): the password, each piece of
    one that holds a raw ``@`` (a driver may show the piece after it as part of a host name),
    and the values of secret query parameters. For scrubbing driver messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return []
    location, _, query = rest.partition("?")
    out = []
    at = location.rfind("@")
    if at >= 0 and not location.startswith("/"):
        password = location[:at].partition(":")[2]
        out += [password, *password.split("@")]
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if eq and key.strip().lower() in SECRET_PARAMETERS:
            out.append(value)
    return sorted({v for v in out if v}, key=len, reverse=True)


def _check(url: str) -> sqlalchemy.URL:
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(
            f"malformed storage URL {redact(url)!r}; expected e.g. sqlite:///tradeoff.db or "
            "postgresql+psycopg://user:password@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not url.startswith(("sqlite:///", "sqlite+")) or not parsed.database:
            raise StorageError(
                f"SQLite URL {redact(url)!r} names no file: give sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db (three slashes, or four for an absolute path)"
            )
        if parsed.database == ":memory:" or parsed.query.get("mode") == "memory":
            raise StorageError(
                f"{redact(url)!r} is an in-memory database, lost when the command ends with every trial "
                "in it; give a file, e.g. sqlite:///tradeoff.db"
            )
    if backend not in _SUPPORTED:
        raise StorageError(
            f"unsupported storage backend {backend!r} in {redact(url)!r}; use one of "
            + ", ".join(_SUPPORTED)
            + ", or grpc://host:port for a `tradeoff proxy`"
        )
    if backend == "postgresql" and parsed.drivername == "postgresql":
        # psycopg 3 ships with tradeoff; psycopg2 (SQLAlchemy's default driver) may not be there.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


_RETRIED = (
    "create_new_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial",
    "set_trial_param", "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial_id_from_study_id_trial_number",
    "get_trial", "get_all_trials", "get_best_trial", "record_heartbeat", "_get_stale_trial_ids",
    "heartbeat_ages",
    # what Optuna's _CachedStorage calls on its backend directly (a restart hit study.ask() here)
    "_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id",
)  # fmt: skip
RETRY_FOR_S = 120.0


# faults that waiting does not mend: (what the driver says, what the user should do)
_PERMANENT = (
    ("readonly database", "the study database is read-only; make it writable or give another --storage"),
    ("read-only file system", "the study database is on a read-only file system; give another --storage"),
    ("file is not a database", "the storage file is not a SQLite database; give another --storage"),
    ("database disk image is malformed", "the study database file is corrupt; restore it from a backup"),
    ("database or disk is full", "the disk of the study database is full; free some space and run again"),
    ("no space left on device", "the disk of the study database is full; free some space and run again"),
    ("disk full", "the disk of the study database is full; free some space and run again"),
    ("permission denied", "permission to the study database was denied; fix its permissions"),
    ("unable to open database file", "the study database file cannot be opened; check its path and rights"),
)


def path_fault(e: BaseException | None) -> str | None:
    """One line naming the file or folder an ``OSError`` in ``e``'s chain could not use (the
    teacher cache, the artifact store, an export's folder: not the study database, whose driver
    names no path), with what to do; None when there is none."""
    while e is not None:
        if isinstance(e, OSError) and e.filename and e.errno is not None:
            import errno

            where = e.filename if isinstance(e.filename, str) else os.fsdecode(e.filename)
            what = {
                errno.EACCES: "permission denied: fix its permissions or choose another path",
                errno.EPERM: "operation not permitted: fix its permissions or choose another path",
                errno.EROFS: "it is on a read-only file system: choose another path",
                errno.ENOSPC: "its disk is full: free some space and run again",
                errno.EDQUOT: "the disk quota is exceeded: free some space and run again",
                errno.ENOTDIR: "a part of its path is a file, not a folder: choose another path",
                errno.EISDIR: "it is a folder, not a file: choose another path",
            }.get(e.errno)
            if what:
                return f"cannot write {where}: {what}"
        e = e.__cause__ or e.__context__
    return None


def permanent_fault(e: BaseException | None) -> str | None:
    """One line saying what is wrong, for a storage fault that retrying cannot mend (a full
    disk, a read-only or corrupt file, a file that is not a database); None otherwise."""
    while e is not None:
        if isinstance(e, OSError) and e.filename:  # a file of ours, not the database (path_fault)
            e = e.__cause__ or e.__context__
            continue
        text = str(getattr(e, "orig", None) or e).lower()
        for needle, message in _PERMANENT:
            if needle in text:
                return message
        e = e.__cause__ or e.__context__
    return None


def transient(e: BaseException) -> bool:
    """A lost or refused connection (a database restart, a network blip), not a logic error and
    not a fault that waiting cannot mend (:func:`permanent_fault`)."""
    if permanent_fault(e):
        return False
    while e is not None:
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
        e = e.__cause__ or e.__context__
    return False


def _with_retry(name: str):
    def call(self, *args, **kwargs):
        method = getattr(optuna.storages.RDBStorage, name)
        delay, deadline = 0.5, time.monotonic() + self.retry_for_s
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as e:
                fault = permanent_fault(e)
                if fault:
                    raise StorageError(fault) from None
                if not transient(e) or time.monotonic() > deadline:
                    raise
                logging.getLogger("tradeoff").warning("study database unreachable; retrying in %.1f s", delay)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    call.__name__ = name
    return call


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose every operation is retried for up to ``retry_for_s`` seconds
    when the connection is lost, so a database restart pauses workers instead of killing them.
    (``pool_pre_ping`` alone replaces dead pooled connections, but cannot wait for the server
    to come back.) A write whose commit reached the server just before the connection broke may
    be repeated; Optuna's writes are idempotent except creating a trial, where that window is a
    single round trip."""

    retry_for_s = RETRY_FOR_S

    for _name in _RETRIED:
        locals()[_name] = _with_retry(_name)
    del _name

    def heartbeat_ages(self, study_id: int) -> dict[int, float]:
        """{trial id: seconds since its last heartbeat, by the database's clock} of the study's
        running trials that have one (Optuna's ``_get_stale_trial_ids`` compares the same ages
        with this storage's grace period; a worker behind the proxy compares them with its own)."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState

        with _create_scoped_session(self.scoped_session) as session:
            now = session.execute(sqlalchemy.func.now()).scalar()
            rows = (
                session.query(models.TrialModel.trial_id, models.TrialHeartbeatModel.heartbeat)
                .join(
                    models.TrialHeartbeatModel,
                    models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id,
                )
                .filter(models.TrialModel.study_id == study_id, models.TrialModel.state == TrialState.RUNNING)
                .all()
            )
        now = now.replace(tzinfo=None)
        return {int(trial_id): (now - beat).total_seconds() for trial_id, beat in rows}

    def lock(self, study_name: str) -> contextlib.AbstractContextManager[None]:
        """The study's lock (see :mod:`tradeoff.storage.lock`): exclusive across processes and
        hosts while the ``with`` body runs."""
        return study_lock(self.engine, study_name, retry_for_s=self.retry_for_s, transient=transient)


def open_storage(
    url: str | None = None,
    *,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    connect_timeout_s: int = 10,
    pool_size: int = 1,
):
    """Open the study database behind ``url`` (see :func:`resolve_url`).

    Heartbeats are on by default, so a trial whose worker vanished is marked failed (and
    retried once through Optuna's ``RetryFailedTrialCallback``) after ``grace_period`` seconds
    (default: 2 heartbeat intervals). The pool holds one connection per worker process and
    pings it before use, so a database restart costs a reconnect, not the worker (the proxy,
    which serves many workers, asks for a larger ``pool_size``).

    ``grpc://host:port`` is a study database served by ``tradeoff proxy``
    (:class:`tradeoff.storage.proxy.ProxyStorage`: the same lock, heartbeats and retries).
    """
    url = resolve_url(url)
    if url.split("://", 1)[0].lower() == "grpc":
        from tradeoff.storage.proxy import ProxyStorage

        try:
            proxy = ProxyStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        except ImportError:
            raise StorageError(f"the proxy URL {redact(url)} needs gRPC: pip install grpcio") from None
        proxy.check(timeout_s=connect_timeout_s)
        return proxy
    parsed = _check(url)
    backend = parsed.get_backend_name()
    engine_kwargs: dict = {"pool_pre_ping": True}
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            folder = os.path.dirname(os.path.abspath(database))
            if not os.path.isdir(folder):
                raise StorageError(
                    f"the folder of the SQLite file {database!r} does not exist; create it or "
                    "give another --storage"
                )
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs.update(
            pool_size=pool_size, max_overflow=max(2, pool_size), pool_recycle=3600, pool_timeout=120
        )
        engine_kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
    callback = None
    if heartbeat_interval:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    try:
        for attempt in range(10):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return ResilientRDBStorage(
                        parsed.render_as_string(hide_password=False),
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=callback,
                    )
            except sqlalchemy.exc.DatabaseError as e:
                # two processes creating the schema of a new database at once: the loser sees
                # "table ... already exists" (SQLite) or a duplicate type (PostgreSQL); the
                # schema is there now, so opening again succeeds
                text = str(e).lower()
                racing = ("already exists", "duplicate key", "unique constraint failed")
                if attempt == 9 or not any(r in text for r in racing):
                    raise
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as e:
        missing = getattr(e.__cause__, "name", None) or getattr(e, "name", None)
        package = DRIVER_PACKAGES.get(str(missing).split(".")[0], missing) if missing else None
        hint = f"pip install {package}" if package else "install the driver the URL names"
        raise StorageError(f"no database driver for {redact(url)!r}; {hint}") from None
    except (sqlalchemy.exc.DatabaseError, sqlalchemy.exc.InterfaceError) as e:
        fault = permanent_fault(e)
        if fault:
            raise StorageError(f"{fault} ({redact(url)})") from None
        reason = str(getattr(e, "orig", e) or e).strip().splitlines()
        first = reason[0] if reason else type(e).__name__
        for secret in secrets_in(url):
            first = first.replace(secret, "***")
        raise StorageError(f"cannot connect to the study database {redact(url)}: {first}") from None
    except sqlalchemy.exc.ArgumentError as e:
        raise StorageError(f"bad storage URL {redact(url)!r}: {str(e).splitlines()[0]}") from None
    except (ValueError, TypeError) as e:  # a query value the driver cannot parse (timeout=abc)
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        for secret in secrets_in(url):
            detail = detail.replace(secret, "***")
        raise StorageError(
            f"bad value in the storage URL {redact(url)!r}: {detail}; fix or drop its ?query options"
        ) from None
