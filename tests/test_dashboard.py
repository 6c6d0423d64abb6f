"""`tradeoff dashboard`: the real optuna-dashboard on a finished study, in headless Chromium.

The browser is Debian's ``chromium`` package (``.ci/run`` installs it), driven by Playwright
with the system binary (Playwright's own browser download is not needed). The screenshot is
kept in ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from conftest import dashboard_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def dashboard(finished_study, tmp_path):
    shutil.copy(finished_study / "tradeoff.db", tmp_path / "tradeoff.db")
    shutil.copytree(finished_study / "tradeoff-artifacts", tmp_path / "tradeoff-artifacts")
    with dashboard_server(tmp_path) as url:
        yield url


def test_dashboard_shows_the_study_in_a_real_browser(dashboard, finished_study):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed; .ci/run should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    import optuna
    from playwright.sync_api import sync_playwright

    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{finished_study / 'tradeoff.db'}")
    n_trials = len(study.trials)
    metric_names = study.metric_names
    assert metric_names[:3] == ["accuracy", "size_bytes", "latency_ms"]  # energy too where a counter reads it

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{dashboard}/dashboard/studies/1/trials")
            page.get_by_text(f"{n_trials} Trials", exact=True).wait_for(timeout=30_000)

            page.goto(f"{dashboard}/dashboard/studies/1")
            page.get_by_text("Pareto Front", exact=True).wait_for(timeout=30_000)
            body = page.inner_text("body")
            for name in metric_names:
                assert name in body, f"metric name {name} not shown"
            # the Pareto-front plot renders one point per complete trial
            card = page.locator("div", has=page.get_by_text("Pareto Front", exact=True)).filter(
                has=page.locator(".js-plotly-plot")
            )
            plot = card.last.locator(".js-plotly-plot").first
            page.wait_for_function(
                "el => el.querySelectorAll('.scatterlayer .point').length > 0", arg=plot.element_handle()
            )
            complete = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
            assert plot.locator(".scatterlayer .point").count() == complete
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 20_000


def _chromium_or_skip() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed; .ci/run should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium)")


def _study_names(folder: Path) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{folder / 'tradeoff.db'}")]


def _artifact_files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in (folder / "tradeoff-artifacts").rglob("*") if p.is_file()
    )


def _delete_and_rename_from_the_page(page, base: str, *, expect_refused: bool) -> list[int]:
    """Click the study list's rename and delete buttons as a user would; returns the HTTP status
    of each request the page sent."""
    statuses = []
    page.goto(f"{base}/dashboard/")
    page.get_by_label("rename study").first.click()
    page.get_by_label("Study name").fill("renamed-by-page")
    with page.expect_response(lambda r: r.request.method == "POST" and "/rename" in r.url) as rename:
        page.get_by_role("button", name="Rename").click()
    statuses.append(rename.value.status)
    if expect_refused:  # the page tells the user
        page.get_by_text("Failed to rename study (id=1)").wait_for(timeout=30_000)
    page.goto(f"{base}/dashboard/")
    page.get_by_label("delete study").first.click()
    with page.expect_response(lambda r: r.request.method == "DELETE") as delete:
        page.get_by_role("button", name="Yes").click()
    statuses.append(delete.value.status)
    if expect_refused:
        page.get_by_text("Failed to delete study").first.wait_for(timeout=30_000)
    return statuses


def test_the_page_cannot_delete_or_rename_the_study_unless_writes_are_allowed(finished_study, tmp_path):
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    for allow in (False, True):
        folder = tmp_path / ("writable" if allow else "read-only")
        folder.mkdir()
        shutil.copy(finished_study / "tradeoff.db", folder / "tradeoff.db")
        shutil.copytree(finished_study / "tradeoff-artifacts", folder / "tradeoff-artifacts")
        files = _artifact_files(folder)
        assert files, "the finished study keeps its teacher in the artifact store"
        args = ("--allow-writes",) if allow else ()
        with dashboard_server(folder, *args) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                statuses = _delete_and_rename_from_the_page(page, url, expect_refused=not allow)
            finally:
                browser.close()
        if allow:  # the flag hands the page the dashboard's whole API: renamed, then deleted
            assert statuses[0] in (200, 201) and statuses[1] in (200, 204)
            assert _study_names(folder) == []
        else:  # nothing stored changed: the study under its name, every artifact file
            assert statuses == [403, 403]
            assert _study_names(folder) == ["tradeoff"]
            assert _artifact_files(folder) == files


def test_writes_through_the_api_are_refused_by_default(finished_study, tmp_path):
    import json
    import urllib.error
    import urllib.request

    shutil.copy(finished_study / "tradeoff.db", tmp_path / "tradeoff.db")
    shutil.copytree(finished_study / "tradeoff-artifacts", tmp_path / "tradeoff-artifacts")
    files = _artifact_files(tmp_path)
    with dashboard_server(tmp_path) as url:
        for method, path, body in [
            ("DELETE", "/api/studies/1?remove_associated_artifacts=true", None),
            ("POST", "/api/studies/1/rename", {"study_name": "x"}),
            ("PUT", "/api/studies/1/note", {"version": 1, "body": "x"}),
            ("POST", "/api/studies", {"study_name": "new", "directions": ["minimize"]}),
            ("POST", "/api/trials/1/user-attrs", {"user_attrs": {"x": 1}}),
        ]:
            data = json.dumps(body).encode() if body is not None else None
            req = urllib.request.Request(url + path, data=data, method=method)
            req.add_header("Content-Type", "application/json")
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=30)
            assert e.value.code == 403, (method, path)
            assert "--allow-writes" in json.loads(e.value.read())["reason"]
        with urllib.request.urlopen(url + "/api/studies/1", timeout=30) as r:  # reads work
            assert r.status == 200 and json.loads(r.read())["name"] == "tradeoff"
    assert _study_names(tmp_path) == ["tradeoff"] and _artifact_files(tmp_path) == files


def test_a_non_loopback_host_is_warned_about():
    from tradeoff.search.views.dashboard import exposure_warning

    assert exposure_warning("127.0.0.1", allow_writes=True) is None
    assert exposure_warning("localhost", allow_writes=False) is None
    assert exposure_warning("::1", allow_writes=False) is None
    warning = exposure_warning("0.0.0.0", allow_writes=False)
    assert "every machine" in warning and "download" in warning and "refused" in warning
    assert "DELETE" in exposure_warning("192.168.1.5", allow_writes=True)


def test_dashboard_on_a_taken_port_is_one_line(cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = cli("dashboard", "--port", str(s.getsockname()[1]), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "cannot listen on 127.0.0.1" in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_the_dashboard_shows_the_notes_the_front_figure_and_the_kept_models(dashboard, finished_study):
    """What tradeoff knows, in the real optuna-dashboard: the study's note, a trial's note with its
    plan in words and its figures, the front saved as a figure, and the trial's kept model as a
    download. Screenshots: test-artifacts/dashboard-front.png and dashboard-trial.png."""
    _chromium_or_skip()
    import optuna
    from playwright.sync_api import sync_playwright

    from tradeoff.search.study.records import KEPT_ATTR, plan_words
    from tradeoff.search.trial.kept import read_bytes
    from tradeoff.search.views.report import front
    from tradeoff.storage import open_artifact_store

    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{finished_study / 'tradeoff.db'}")
    store = open_artifact_store(str(finished_study / "tradeoff-artifacts"))
    kept = next(t for t in front(study) if KEPT_ATTR in t.user_attrs)  # the front's models are kept
    model_bytes = read_bytes(store, kept.user_attrs[KEPT_ATTR]["artifact_id"])
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{dashboard}/dashboard/studies/1/note")
            page.get_by_text("Reading the figures").wait_for(timeout=30_000)
            body = page.inner_text("body")
            assert "Study tradeoff" in body and "Teacher: trained by tradeoff" in body
            assert "Objectives: accuracy, size_bytes, latency_ms" in body and "Constraints: none" in body

            page.goto(f"{dashboard}/dashboard/studies/1")
            figure = page.locator(".js-plotly-plot", has=page.get_by_text("front in real units", exact=False))
            figure.first.wait_for(timeout=30_000)
            figure.first.screenshot(path=str(ARTIFACTS / "dashboard-front.png"))
            # the hypervolume over trials and the sensitivity table's heat maps beside it
            for title in ("hypervolume of the front over trials", "Sensitivity of each layer group alone"):
                page.locator(".js-plotly-plot", has=page.get_by_text(title, exact=False)).first.wait_for(
                    timeout=30_000
                )

            page.goto(f"{dashboard}/dashboard/studies/1/trials?numbers={kept.number}")
            page.get_by_text(f"Trial {kept.number}: ", exact=False).first.wait_for(timeout=30_000)
            body = page.inner_text("body")
            assert plan_words(kept) in body and "validation accuracy (%)" in body
            assert f"tradeoff export --study-name tradeoff --trial {kept.number}" in body
            page.get_by_text("model.onnx", exact=True).first.wait_for(timeout=30_000)
            with page.expect_download(timeout=30_000) as download:
                page.locator("a[download]").first.click()
            with open(download.value.path(), "rb") as f:
                assert f.read() == model_bytes
            page.get_by_text(f"Trial {kept.number}: ", exact=False).first.scroll_into_view_if_needed()
            page.evaluate("window.scrollTo(0, window.scrollY)")
            page.screenshot(path=str(ARTIFACTS / "dashboard-trial.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard-front.png").stat().st_size > 10_000
