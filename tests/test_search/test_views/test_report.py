"""`tradeoff report`: a self-contained HTML file and a PNG, from a real finished study."""

from __future__ import annotations

import re
import shutil

import optuna

from tradeoff.search.views.plots import figure
from tradeoff.search.views.report import front


def test_report_writes_self_contained_html_and_png(finished_study, cli, tmp_path):
    shutil.copy(finished_study / "tradeoff.db", tmp_path / "tradeoff.db")
    r = cli("report", "--output", "front.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "front.html").read_text()
    assert not re.search(r"<script[^>]+src=", html)  # plotly.js is inlined, nothing fetched
    assert "Plotly.newPlot" in html and len(html) > 1_000_000
    png = (tmp_path / "front.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(tmp_path.glob("*.tmp*"))


def test_figure_marks_baseline_single_technique_front_and_dominated(finished_study):
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{finished_study / 'tradeoff.db'}")
    fig = figure(study)
    names = {t.name for t in fig.data if t.type == "scatter"}
    assert {"baseline", "single technique", "Pareto front"} <= names
    on_front = {t.number for t in front(study)}
    pareto_points = next(t for t in fig.data if t.type == "scatter" and t.name == "Pareto front")
    assert {int(re.match(r"#(\d+):", s).group(1)) for s in pareto_points.text} == on_front
    table = next(t for t in fig.data if t.type == "table")
    assert list(table.cells.values[0]) == [f"#{n}" for n in (t.number for t in front(study))]


def test_report_on_a_missing_study_is_one_line(cli, tmp_path):
    r = cli("report", "--study-name", "nope", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no study named 'nope'" in r.stderr


def test_a_front_plan_ahead_only_by_noise_is_marked_a_tie():
    """Of two front plans, the one whose only advantage is an accuracy higher by fewer
    images than the 95 % noise of the validation split is a tie; a clear advantage is not."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from tradeoff.search.views.report import noise_ties

    def trial(number, acc, size, n=360):
        t = create_trial(
            params={"x": 0.0},
            distributions={"x": FloatDistribution(0, 1)},
            values=[acc, size],
            user_attrs={"accuracy": acc, "size_bytes": size, "accuracy_images": n},
        )
        t.number = number
        return t

    objectives = ("accuracy", "size_bytes")
    # 355/360 against 353/360: two images, inside the noise; the larger plan ties with the smaller
    big, small = trial(1, 355 / 360, 2e6), trial(2, 353 / 360, 1e6)
    assert noise_ties([big, small], objectives) == {1: 2}
    # 355/360 against 300/360: a real difference, no tie
    assert noise_ties([big, trial(3, 300 / 360, 1e6)], objectives) == {}
    # the same two images on 36,000 images are far beyond the noise
    assert noise_ties([trial(1, 0.986, 2e6, 36000), trial(2, 0.980, 1e6, 36000)], objectives) == {}
