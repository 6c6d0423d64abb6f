"""The artifact store: the teacher checkpoint (and, optionally, trials' compressed models).

A directory by default (``./tradeoff-artifacts``, or ``--artifacts`` / ``$TRADEOFF_ARTIFACTS``),
through Optuna's artifact API so that optuna-dashboard can browse the same files.
"""

from __future__ import annotations

import os

from optuna.artifacts import FileSystemArtifactStore

from storage.errors import StorageError

DEFAULT_ARTIFACTS = "tradeoff-artifacts"
ENV_ARTIFACTS = "TRADEOFF_ARTIFACTS"


def resolve_artifacts(location: str | None = None) -> str:
    return location or os.environ.get(ENV_ARTIFACTS) or DEFAULT_ARTIFACTS


def open_artifact_store(location: str | None = None) -> FileSystemArtifactStore:
    """Open (creating if needed) the artifact directory at ``location``."""
    path = resolve_artifacts(location)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the artifact directory {path!r}: {e.strerror}") from None
    return FileSystemArtifactStore(path)
