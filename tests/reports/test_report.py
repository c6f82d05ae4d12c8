"""The report builds from run directories, has every section with embedded images, and its tables show the
numbers of the runs' evaluation files (mean ± std over seeds)."""

from __future__ import annotations

import base64
import re
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "diagnostics"))
from fixture_run import write_fixture_run  # noqa: E402

from mgs.cli import main  # noqa: E402
from mgs.reports.build import SECTIONS  # noqa: E402


def test_report_has_every_section_images_and_matching_numbers(tmp_path):
    scores = {0: {"gsm8k": 0.25, "ifeval": 0.5}, 1: {"gsm8k": 0.35, "ifeval": 0.4}}
    runs = [write_fixture_run(tmp_path / f"mgs_s{s}", steps=4, seed=s, save_grads=False,
                              evals={"bench_step_000004": scores[s]}) for s in (0, 1)]
    runs.append(write_fixture_run(tmp_path / "mixed", steps=4, seed=0, method="sum", strategy="mixed",
                                  save_grads=False, evals={"after": {"gsm8k": 0.2, "ifeval": 0.3}}))
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0

    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page and f"## {title}" in md
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 7
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    for link in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / link).is_file()

    # strategies x benchmarks: mgs over seeds 0 and 1, in percent, mean ± sample std
    (row,) = [line for line in md.splitlines() if line.startswith("| mgs |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "0,1"
    g = [100 * scores[s]["gsm8k"] for s in (0, 1)]
    i = [100 * scores[s]["ifeval"] for s in (0, 1)]
    assert cells[2] == f"{statistics.fmean(g):.1f} ± {statistics.stdev(g):.1f}"
    assert cells[3] == f"{statistics.fmean(i):.1f} ± {statistics.stdev(i):.1f}"
    totals = [(a + b) / 2 for a, b in zip(g, i)]
    assert cells[4] == f"{statistics.fmean(totals):.1f} ± {statistics.stdev(totals):.1f}"
    (mixed,) = [line for line in md.splitlines() if line.startswith("| mixed | 0 |")]
    assert [c.strip() for c in mixed.strip("|").split("|")][2:] == ["20.0", "30.0", "25.0"]


def test_a_rebuild_drops_figures_only_the_earlier_build_wrote(tmp_path):
    runs = [write_fixture_run(tmp_path / f"mgs_s{s}", steps=3, seed=s, save_grads=False,
                              evals={"after": {"gsm8k": 0.2}}) for s in (0, 1)]
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.png").write_bytes(b"not ours")
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    first = {p.name for p in out.glob("*.png")}
    assert main(["report", str(runs[0]), "--out", str(out)]) == 0
    second = {p.name for p in out.glob("*.png")}
    linked = set(re.findall(r"\]\(([^)]+\.png)\)", (out / "report.md").read_text()))
    assert first - second, "one run fewer should write fewer per-run figures"
    assert second == linked | {"mine.png"}


def test_adding_a_run_leaves_the_other_runs_figure_files_as_they_were(tmp_path):
    # per-run figures are named after the run folder, not their position: a run that sorts first must not
    # rename (or rewrite) the figures of the runs already in the report
    later = write_fixture_run(tmp_path / "mgs_s1", steps=3, seed=1, save_grads=False, evals={"after": {"gsm8k": 0.2}})
    first = write_fixture_run(tmp_path / "mgs_s0", steps=3, seed=0, save_grads=False, evals={"after": {"gsm8k": 0.3}})
    out_one, out_two = tmp_path / "one", tmp_path / "two"
    assert main(["report", str(later), "--out", str(out_one)]) == 0
    assert main(["report", str(first), str(later), "--out", str(out_two)]) == 0
    mine = out_one / "cosine_by_group_type_mgs-s1.png"
    assert mine.is_file()
    assert (out_two / mine.name).read_bytes() == mine.read_bytes()
    assert (out_two / "cosine_by_group_type_mgs-s0.png").is_file()


def test_curves_are_drawn_per_strategy_as_the_seed_mean_with_a_min_max_band(tmp_path):
    from mgs.diagnostics import training
    from mgs.diagnostics.rundir import RunDir
    from mgs.reports import plots

    runs = [RunDir(write_fixture_run(tmp_path / f"mgs_s{s}", steps=4, seed=s, save_grads=False)) for s in (0, 1)]
    runs.append(RunDir(write_fixture_run(tmp_path / "mixed", steps=4, method="sum", strategy="mixed",
                                         save_grads=False)))
    fig = plots.domain_curves(runs, "reward")
    ax = fig.axes[0]
    domain = ax.get_title().split(":")[0]
    per_run = [training.domain_curves(r)["reward"][domain] for r in runs]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"mgs (mean of 2 seeds)", "mixed seed 0"}
    a, b = per_run[0][1], per_run[1][1]
    assert list(lines["mgs (mean of 2 seeds)"].get_ydata()) == pytest.approx([(x + y) / 2 for x, y in zip(a, b)])
    assert list(lines["mixed seed 0"].get_ydata()) == pytest.approx(list(per_run[2][1]))
    (band,) = ax.collections  # the two seeds' min..max; a single run gets none
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(min(min(a), min(b))) and max(ys) == pytest.approx(max(max(a), max(b)))
    assert a != b, "the fixture's seeds must differ for the mean to mean anything"


def test_the_title_names_each_strategy_once_with_its_seeds(tmp_path):
    runs = [write_fixture_run(tmp_path / f"mgs_s{s}", steps=2, seed=s, save_grads=False) for s in (0, 1)]
    runs.append(write_fixture_run(tmp_path / "mixed", steps=2, seed=3, method="sum", strategy="mixed",
                                  save_grads=False))
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    assert (out / "report.md").read_text().splitlines()[0] == "# MGS report: 3 runs: mgs seeds 0, 1; mixed seed 3"


def test_ratio_curves_on_a_log_scale_pool_seeds_by_the_geometric_mean(tmp_path):
    from mgs.diagnostics.rundir import RunDir
    from mgs.reports import plots

    runs = [RunDir(write_fixture_run(tmp_path / f"mgs_s{s}", steps=3, seed=s, save_grads=False)) for s in (0, 1)]
    curves = [(run, ([1, 2], [r, 4 * r])) for run, r in zip(runs, (1.0, 4.0))]
    (_, _, steps, mean, lo, hi), = plots.strategy_curves(curves, geometric=True)
    assert steps == [1, 2] and mean == pytest.approx([2.0, 8.0]) and lo == [1.0, 4.0] and hi == [4.0, 16.0]
    (_, _, _, arith, _, _), = plots.strategy_curves(curves)
    assert arith == pytest.approx([2.5, 10.0])
