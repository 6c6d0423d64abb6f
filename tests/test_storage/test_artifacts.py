"""The artifact store: a real directory, and a real S3-compatible server (moto's, on loopback)."""

from __future__ import annotations

import filecmp

import optuna
import pytest
from optuna.artifacts import download_artifact, upload_artifact

from tradeoff.storage import StorageError, open_artifact_store


def round_trip(store, tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}")
    src = tmp_path / "teacher.pt"
    src.write_bytes(bytes(range(256)) * 1000)
    artifact_id = upload_artifact(artifact_store=store, file_path=str(src), study_or_trial=study)
    dst = tmp_path / "back.pt"
    download_artifact(artifact_store=store, file_path=str(dst), artifact_id=artifact_id)
    assert filecmp.cmp(src, dst, shallow=False)


def test_directory_store_is_created_and_round_trips(tmp_path):
    store = open_artifact_store(str(tmp_path / "nested" / "artifacts"))
    assert (tmp_path / "nested" / "artifacts").is_dir()
    round_trip(store, tmp_path)


@pytest.fixture
def s3_server(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="tradeoff-artifacts")
    yield
    server.stop()


def test_s3_store_round_trips(s3_server, tmp_path):
    round_trip(open_artifact_store("s3://tradeoff-artifacts"), tmp_path)


@pytest.mark.parametrize(
    "location, message",
    [
        ("s3://no-such-bucket", "cannot use the artifact bucket"),
        ("s3://", "give a bucket alone"),
        ("s3://a/b", "give a bucket alone"),
    ],
)
def test_bad_s3_locations_get_one_line_errors(s3_server, location, message):
    with pytest.raises(StorageError, match=message) as e:
        open_artifact_store(location)
    assert "\n" not in str(e.value)
