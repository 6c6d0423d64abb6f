"""The artifact store: the teacher checkpoint (and, optionally, trials' compressed models).

A directory by default (``./tradeoff-artifacts``, or ``--artifacts`` / ``$TRADEOFF_ARTIFACTS``),
or an S3-compatible bucket given as ``s3://BUCKET`` (boto3, from the ``s3`` extra; endpoint and
credentials from boto3's usual environment: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...),
through Optuna's artifact API so that optuna-dashboard can browse the same files.
"""

from __future__ import annotations

import hashlib
import os

from optuna.artifacts import FileSystemArtifactStore

from tradeoff.storage.errors import StorageError

DEFAULT_ARTIFACTS = "tradeoff-artifacts"
ENV_ARTIFACTS = "TRADEOFF_ARTIFACTS"


def resolve_artifacts(location: str | None = None) -> str:
    return location or os.environ.get(ENV_ARTIFACTS) or DEFAULT_ARTIFACTS


def open_artifact_store(location: str | None = None):
    """Open the artifact store at ``location``: an ``s3://BUCKET`` or a directory (created if
    needed)."""
    path = resolve_artifacts(location)
    if path.startswith("s3://"):
        return _s3_store(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the artifact directory {path!r}: {e.strerror}") from None
    return FileSystemArtifactStore(path)


def _s3_store(location: str):
    bucket = location[len("s3://") :].strip("/")
    if not bucket or "/" in bucket:
        raise StorageError(f"artifact store {location!r}: give a bucket alone, as s3://BUCKET")
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise StorageError("an s3:// artifact store needs boto3: pip install 'tradeoff[s3]'") from None
    from optuna.artifacts import Boto3ArtifactStore

    client = boto3.client("s3")
    try:
        client.head_bucket(Bucket=bucket)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise StorageError(f"cannot use the artifact bucket {bucket!r}: {str(e).splitlines()[0]}") from None
    return Boto3ArtifactStore(bucket, client=client)


def writable_folder(path: str, *, what: str, variable: str) -> str:
    """``path``, made if needed; StorageError naming it (``what``) and the environment
    ``variable`` that moves it when it cannot be made or written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise StorageError(
            f"{what} {path} cannot be a folder ({e.strerror}); point ${variable} at a folder you can write"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StorageError(f"{what} {path} is not writable; point ${variable} at a folder you can write")
    return path


def sha256_file(path: str) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
