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


def test_dashboard_on_a_taken_port_is_one_line(cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = cli("dashboard", "--port", str(s.getsockname()[1]), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "cannot listen on 127.0.0.1" in r.stderr
    assert r.stderr.strip().count("\n") == 0
