"""Where studies and their artifacts live: the SQL study database and the artifact store."""

from __future__ import annotations

from tradeoff.storage.artifacts import DEFAULT_ARTIFACTS, ENV_ARTIFACTS, open_artifact_store
from tradeoff.storage.errors import StorageError, TradeoffError
from tradeoff.storage.urls import DEFAULT_URL, ENV_URL, ENV_URL_FILE, open_storage, redact, resolve_url

__all__ = [
    "DEFAULT_ARTIFACTS",
    "DEFAULT_URL",
    "ENV_ARTIFACTS",
    "ENV_URL",
    "ENV_URL_FILE",
    "StorageError",
    "TradeoffError",
    "open_artifact_store",
    "open_storage",
    "redact",
    "resolve_url",
]
