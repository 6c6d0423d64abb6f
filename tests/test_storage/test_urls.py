from __future__ import annotations

import time

import optuna
import pytest

from tradeoff.storage import StorageError, open_storage, redact, resolve_url


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("pg_url")


def test_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv("TRADEOFF_STORAGE", raising=False)
    monkeypatch.delenv("TRADEOFF_STORAGE_FILE", raising=False)
    assert resolve_url(None) == "sqlite:///tradeoff.db"
    secret = tmp_path / "url"
    secret.write_text("postgresql://u:pw@db/x\n")
    monkeypatch.setenv("TRADEOFF_STORAGE_FILE", str(secret))
    assert resolve_url(None) == "postgresql://u:pw@db/x"
    monkeypatch.setenv("TRADEOFF_STORAGE", "sqlite:///env.db")
    assert resolve_url(None) == "sqlite:///env.db"
    assert resolve_url("sqlite:///arg.db") == "sqlite:///arg.db"


def test_redact_hides_the_password():
    assert "hunter2" not in redact("postgresql://bob:hunter2@db:5432/x")
    assert "hunter2" not in redact("postgresql://bob:hunter2@@@:bad")


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "malformed storage URL"),
        ("oracle://u@h/x", "unsupported storage backend 'oracle'"),
        ("sqlite:////no/such/folder/x.db", "folder of the SQLite file"),
    ],
)
def test_bad_urls_get_one_line_errors(url, message):
    with pytest.raises(StorageError, match=message) as e:
        open_storage(url)
    assert "\n" not in str(e.value)


def test_unreachable_host_fails_fast_without_the_password():
    t = time.monotonic()
    with pytest.raises(StorageError, match="cannot connect to the study database") as e:
        open_storage("postgresql://bob:hunter2@127.0.0.1:9/x", connect_timeout_s=3)
    assert time.monotonic() - t < 10
    assert "hunter2" not in str(e.value) and "\n" not in str(e.value)


def test_studies_persist_in_every_backend(any_url):
    storage = open_storage(any_url)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    study.set_user_attr("k", {"a": 1})
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=3)
    storage.engine.dispose()
    again = optuna.load_study(study_name="s", storage=open_storage(any_url))
    assert len(again.trials) == 3 and again.user_attrs["k"] == {"a": 1}


def test_heartbeat_is_on_with_a_retry_callback(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=5)
    assert storage.get_heartbeat_interval() == 5
    assert storage.get_heartbeat_stale_trial_callback() is not None
