"""Optuna's gRPC storage proxy, with what tradeoff's workers need beside it.

``tradeoff proxy --storage URL`` serves one study database to workers whose storage is
``grpc://host:port``. Two services share the server's port:

- Optuna's own ``StorageService`` (``optuna.storages.run_grpc_proxy_server``'s), over the
  database opened with tradeoff's retries, behind Optuna's trial cache: every worker's reads
  and writes of studies and trials.
- ``tradeoff.Coordination``, what Optuna's service lacks and a fleet needs:
  ``Lock`` holds the study lock (the same PostgreSQL advisory lock, MySQL ``GET_LOCK`` or file
  lock that a worker on the database takes, so workers behind the proxy and workers on the
  database exclude each other) for as long as the client keeps the call open: a worker that is
  killed drops its connection, and the lock goes with it; ``Heartbeat`` records a trial's
  heartbeat; ``HeartbeatAges`` gives each running trial's seconds since its last heartbeat by
  the database's clock, from which the client's own grace period says which are stale.

The messages are small JSON documents sent through gRPC's generic handlers: no second protocol
file to compile, and Optuna's own messages are untouched. Written here because Optuna's proxy
has no lock and no heartbeats (``GrpcStorageProxy`` is a plain ``BaseStorage``), and a worker
without them can neither keep a budget exact nor retry a lost trial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat

from tradeoff.storage.errors import StorageError

SERVICE = "tradeoff.Coordination"
DEFAULT_PORT = 13000
# a client or a link that vanishes without closing its connection is noticed within this
KEEPALIVE = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.max_receive_message_length", -1),
]


def _dump(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _load(data: bytes) -> Any:
    return json.loads(data or b"null")


def parse_target(url: str) -> tuple[str, int]:
    """(host, port) of ``grpc://host:port``; StorageError for anything else."""
    rest = url.partition("://")[2]
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or not port.isdigit() or "/" in rest.rstrip("/") or "@" in rest:
        from tradeoff.storage.urls import redact

        raise StorageError(
            f"malformed proxy URL {redact(url)!r} (no user or password: the proxy has no login); "
            f"expected grpc://host:port, e.g. grpc://tradeoff-proxy:{DEFAULT_PORT}"
        )
    return host.strip("[]"), int(port)


# ------------------------------------------------------------------------------------- server


class Coordination:
    """The server side of ``tradeoff.Coordination`` over the backing RDB storage."""

    def __init__(self, storage, *, max_waiting: int = 240) -> None:
        self.storage = storage
        self._local: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        # a caller waiting for a lock holds one of the server's threads: never all of them, or the
        # holder's own storage calls would find none left to serve them
        self._waiting = threading.BoundedSemaphore(max_waiting)

    def _study_lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._local.setdefault(name, threading.Lock())

    def lock(self, request: bytes, context) -> Iterator[bytes]:
        """Held from the first message sent until the client ends the call (or its connection
        drops). Waiters queue on a lock in this process first, so only the holder uses a
        database connection for the study lock."""
        import grpc

        name = str(_load(request)["study"])
        ended = threading.Event()
        if not context.add_callback(ended.set):
            return  # the call has ended already
        if not self._waiting.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many callers wait for the study lock")
        try:
            local = self._study_lock(name)
            while not local.acquire(timeout=1.0):
                if not context.is_active():
                    return
        finally:
            self._waiting.release()
        try:
            with self.storage.lock(name):
                if not context.is_active():
                    return
                yield _dump({"held": True})
                ended.wait()  # the client is in its locked section until it cancels the call
        finally:
            local.release()

    def heartbeat(self, request: bytes, context) -> bytes:
        self.storage.record_heartbeat(int(_load(request)["trial_id"]))
        return _dump({})

    def heartbeat_ages(self, request: bytes, context) -> bytes:
        ages = self.storage.heartbeat_ages(int(_load(request)["study_id"]))
        return _dump({str(k): v for k, v in ages.items()})

    def handler(self):
        import grpc

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Lock": grpc.unary_stream_rpc_method_handler(self.lock),
                "Heartbeat": grpc.unary_unary_rpc_method_handler(self.heartbeat),
                "HeartbeatAges": grpc.unary_unary_rpc_method_handler(self.heartbeat_ages),
            },
        )


def make_server(url: str, host: str, port: int, *, threads: int = 256, allow_delete: bool = False):
    """A gRPC server (not started) serving the study database at ``url`` on ``host:port``.
    ``threads`` bounds the calls in progress at once: a worker waiting for the study lock holds
    one, so at most ``threads - 16`` wait at once (the others are told to retry: slower, never
    stuck). Deleting a study through the proxy is refused
    (PERMISSION_DENIED) unless ``allow_delete``: no worker ever deletes one, and the port has no
    authentication."""
    import grpc
    from optuna.storages._grpc import servicer as optuna_servicer
    from optuna.storages._grpc.auto_generated import api_pb2_grpc

    from tradeoff.storage.urls import open_storage

    if url.split("://", 1)[0].lower() == "grpc":
        raise StorageError(f"{url} is a proxy already; give the proxy the database's URL")
    backing = open_storage(url, heartbeat_interval=None, pool_size=8)
    # no SO_REUSEPORT: a second proxy on a taken port must fail, not share the port
    server = grpc.server(
        ThreadPoolExecutor(max_workers=threads), options=[*KEEPALIVE, ("grpc.so_reuseport", 0)]
    )

    class Service(optuna_servicer.OptunaStorageProxyService):
        def DeleteStudy(self, request, context):  # noqa: N802 - Optuna's RPC name
            if not allow_delete:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "this proxy refuses to delete studies; start it with --allow-delete to permit that",
                )
            return super().DeleteStudy(request, context)

    api_pb2_grpc.add_StorageServiceServicer_to_server(Service(optuna.storages.get_storage(backing)), server)
    server.add_generic_rpc_handlers((Coordination(backing, max_waiting=max(1, threads - 16)).handler(),))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise StorageError(
            f"cannot listen on {host}:{port}: the port is taken or the address is not this host's; "
            "choose another --port or --host"
        )
    return server


# ------------------------------------------------------------------------------------- client


def _unavailable(e: BaseException) -> bool:
    import grpc

    return isinstance(e, grpc.RpcError) and e.code() in (
        grpc.StatusCode.UNAVAILABLE,  # the proxy restarts
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


def _with_retry(name: str):
    def call(self, *args, **kwargs):
        method = getattr(optuna.storages.GrpcStorageProxy, name)
        return self._retrying(lambda: method(self, *args, **kwargs))

    call.__name__ = name
    return call


_RETRIED = (
    "create_new_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
)  # fmt: skip


class ProxyStorage(optuna.storages.GrpcStorageProxy, BaseHeartbeat):
    """Optuna's ``GrpcStorageProxy`` with what the worker loop asks of a storage: the study
    lock (:meth:`lock`), heartbeats and stale trials (Optuna's ``BaseHeartbeat``, by the
    database's clock on the proxy's side), and tradeoff's retries while the proxy restarts."""

    retry_for_s = 120.0

    for _name in _RETRIED:
        locals()[_name] = _with_retry(_name)
    del _name

    def __init__(
        self, url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None
    ) -> None:
        host, port = parse_target(url)
        self.url = url
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=host, port=port)

    def _setup(self) -> None:
        import grpc

        self._channel = grpc.insecure_channel(f"{self._host}:{self._port}", options=KEEPALIVE)
        from optuna.storages._grpc.auto_generated import api_pb2_grpc
        from optuna.storages._grpc.client import GrpcClientCache

        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
        self._cache = GrpcClientCache(self._stub)
        path = f"/{SERVICE}/"
        self._lock_call = self._channel.unary_stream(path + "Lock")
        self._beat_call = self._channel.unary_unary(path + "Heartbeat")
        self._ages_call = self._channel.unary_unary(path + "HeartbeatAges")

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        for key in ("_lock_call", "_beat_call", "_ages_call"):
            state.pop(key, None)
        return state

    def check(self, timeout_s: float) -> None:
        """StorageError naming the proxy when it does not answer within ``timeout_s``."""
        try:
            self.wait_server_ready(timeout=timeout_s)
        except ConnectionError:
            raise StorageError(
                f"cannot reach the study proxy {self.url}: nothing answered within {timeout_s:g} s; "
                "start it with `tradeoff proxy --storage URL`, or check the host and port"
            ) from None

    def _retrying(self, fn, *args):
        """``fn(*args)``, retried while the proxy is unreachable (for ``retry_for_s``) and for as
        long as it says that too many callers wait for the lock (that is load, not an outage)."""
        import random

        import grpc

        delay, deadline = 0.5, time.monotonic() + self.retry_for_s
        while True:
            try:
                return fn(*args)
            except Exception as e:
                if isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    time.sleep(random.uniform(0.1, 1.0))
                    continue
                if not _unavailable(e) or time.monotonic() > deadline:
                    raise
                logging.getLogger("tradeoff").warning("study proxy unreachable; retrying in %.1f s", delay)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    @contextlib.contextmanager
    def lock(self, study_name: str) -> Iterator[None]:
        """The study lock, held on the proxy while the body runs (see the module)."""

        def take():
            call = self._lock_call(_dump({"study": study_name}))
            try:
                next(call)  # the first message: held
            except BaseException:
                call.cancel()
                raise
            return call

        call = self._retrying(take)
        try:
            yield
        finally:
            call.cancel()

    # BaseHeartbeat: the worker keeps the beat (tradeoff.search.study.worker.heartbeat)
    def record_heartbeat(self, trial_id: int) -> None:
        self._retrying(self._beat_call, _dump({"trial_id": trial_id}))

    def heartbeat_ages(self, study_id: int) -> dict[int, float]:
        """{trial id: seconds since its last heartbeat} of the study's running trials."""
        got = _load(self._retrying(self._ages_call, _dump({"study_id": study_id})))
        return {int(k): float(v) for k, v in got.items()}

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = self.grace_period or 2 * self.heartbeat_interval
        return [t for t, age in self.heartbeat_ages(study_id).items() if age > grace]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return None  # the worker queues a lost trial's plan again itself (worker.fail_lost_trials)
