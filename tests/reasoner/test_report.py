"""reasoner.report on a tiny fake run (tests.support.report_run): every file, the numbers and
intervals in report.md, a self-contained report.html, and the missing pieces said, not fatal."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from reasoner.report import build_report, describe, interval_text
from reasoner.rundir import RunDir, RunDirError
from tests.support.report_run import ACCURACY, COMPARISON_TEXT, COMPARISONS, make_report_run

FIGURES = ("accuracy.png", "reranking.png", "reranking-served.png", "credit.png", "training.png")
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = make_report_run(tmp_path_factory.mktemp("report") / "run")
    return run, build_report(run)


def _text(run: RunDir, name: str) -> str:
    with open(run.path("report", name), encoding="utf-8") as fh:
        return fh.read()


def test_every_file_is_written_and_every_figure_is_a_real_png(built) -> None:
    run, summary = built
    assert sorted(summary["files"]) == sorted([*FIGURES, "report.md", "report.html"])
    for name in FIGURES:
        with open(run.path("report", name), "rb") as fh:
            data = fh.read()
        assert len(data) > 10_000, name
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and min(image.size) > 200, name
    assert summary["credit"] == "sequence" and summary["questions"] == 16


def test_markdown_has_the_numbers_the_intervals_and_the_figures(built) -> None:
    run, _ = built
    md = _text(run, "report.md")
    assert md.startswith(f"# Report: `{run.uri}`")
    for a, b in ACCURACY.values():
        assert f"{a:.3f}" in md and f"{b:.3f}" in md and f"{(a + b) / 2:.3f}" in md
    assert "| source | SFT direct | SFT CoT | DPO direct | DPO CoT | questions |" in md
    assert "| overall | 0.179 | 0.401 | 0.167 | 0.623 | 16 |" in md
    for name, text in COMPARISON_TEXT.items():
        assert f"| `{name}` | {text} |" in md
    assert "DPO is higher, by 6.1 points" in md and "no clear difference between majority vote" in md
    assert "| `dpo_vs_sft_cot` | 955 | 16 |" in md  # questions_for_2_points
    for name in FIGURES:
        assert f"]({name})" in md
    assert "| `eval` | evaluate | `hash-evaluate` |" in md and "| `models/dpo` | train_dpo |" in md
    assert "per-token rewards are not saved" in md  # the credit figure's fallback is said
    # The served generator's pool: its own section, curves and comparison.
    served = md[md.index("## Reranking the served generator's candidates"):]
    assert "sampled by `models/dpo`" in served and "0.312" in served  # single at N=1: 0.3 + 0.0123
    assert "| `best_of_n_vs_majority@4` | +0.043 [0.010, 0.077] |" in served


def test_html_is_self_contained(built) -> None:
    run, _ = built
    page = _text(run, "report.html")
    assert len(DATA_URI.findall(page)) == len(FIGURES)
    rest = DATA_URI.sub("", page)
    assert "http" not in rest and 'src="' not in rest.replace('src=""', "")
    assert "<table>" in page and "+0.061 [0.045, 0.079]" in page and "<style>" in page


def test_a_run_without_an_evaluation_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(RunDirError, match="run the evaluate stage first"):
        build_report(RunDir(str(tmp_path / "empty")))


def test_a_run_without_a_dpo_model_still_builds_and_says_so(tmp_path) -> None:
    run = make_report_run(tmp_path / "run", dpo=False)
    summary = build_report(run)
    md = _text(run, "report.md")
    assert "no `models/dpo` in the run" in md and "## Notes" in md
    assert summary["credit"] is None and "credit.png" not in summary["files"]
    assert {"accuracy.png", "reranking.png", "training.png"} <= set(summary["files"])
    assert "reranking-served.png" not in summary["files"] and "served generator" not in md
    assert "| overall | 0.179 | 0.401 | 0.167 | 0.623 | 16 |" in md  # base and SFT here
    assert "dpo_vs_sft" not in md


def test_saved_token_rewards_are_drawn_as_token_boxes(tmp_path) -> None:
    run = make_report_run(tmp_path / "run", token_rewards=True)
    summary = build_report(run)
    assert summary["credit"] == "tokens"
    assert "per-token rewards are not saved" not in _text(run, "report.md")
    assert Image.open(run.path("report", "credit.png")).format == "PNG"


def test_interval_text_and_meaning() -> None:
    assert interval_text({"estimate": 0.0612, "low": 0.0451, "high": 0.0789}) == "+0.061 [0.045, 0.079]"
    assert interval_text({"estimate": -0.0, "low": -0.0, "high": 0.0}) == "+0.000 [0.000, 0.000]"
    what, meaning = describe("dpo_vs_sft_cot", COMPARISONS["dpo_vs_sft_cot"])
    assert what == "DPO minus SFT, greedy CoT accuracy" and meaning.startswith("DPO is higher, by 6.1 points")
    assert describe("best_of_n_vs_majority@8", {"estimate": -0.03, "low": -0.05, "high": -0.01})[1].startswith(
        "best-of-N (DPO reward) is lower, by 3.0 points")
