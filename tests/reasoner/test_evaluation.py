"""reasoner.evaluation: greedy direct and CoT accuracy, per source and number of steps."""

from __future__ import annotations

import io

import pytest

from reasoner.evaluation import (GreedyEvalConfig, GreedyEvaluator, format_gain, format_summary, prediction_of,
                                 reasoning_steps, summarise, summarise_gain)
from reasoner.options import ConfigError


def row(source: str, mode: str, correct: bool, steps: int | None = 1, answer: str | None = "1") -> dict:
    return {"id": f"{source}-{mode}", "source": source, "mode": mode, "steps": steps, "correct": correct,
            "answer": answer}


def test_reasoning_steps_counts_rationale_lines_before_the_answer() -> None:
    assert reasoning_steps({"rationale": "The red bar is 4.\nThe blue bar is 7.\n4 + 7 = 11.\n### Answer: 11"}) == 3
    assert reasoning_steps({"rationale": "The red bar is 4.\n\n### Answer: 4\n"}) == 1
    assert reasoning_steps({"rationale": None}) is None
    assert reasoning_steps({}) is None


def test_prediction_of_a_reply() -> None:
    assert prediction_of("a\n### Answer: 7", "cot") == "7"
    assert prediction_of("7", "cot") is None  # CoT must end with the marker
    assert prediction_of(" 7 \n", "direct") == "7"  # direct: the reply itself
    assert prediction_of("### Answer: B", "direct") == "B"
    assert prediction_of("  ", "direct") is None
    assert prediction_of(" 7 ", "direct_blind") == "7" and prediction_of("7", "cot_blind") is None


def test_summarise_groups_by_source_steps_and_mode() -> None:
    rows = [row("chart", "direct", True), row("chart", "direct", False, steps=2),
            row("chart", "cot", True, steps=2), row("count", "cot", False, steps=6, answer=None)]
    summary = summarise(rows)
    assert summary["overall"]["direct"] == {"accuracy": 0.5, "questions": 2, "answered": 1.0}
    assert summary["overall"]["cot"] == {"accuracy": 0.5, "questions": 2, "answered": 0.5}
    assert summary["by_source"]["chart"]["cot"]["accuracy"] == 1.0
    assert summary["by_source"]["count"] == {"cot": {"accuracy": 0.0, "questions": 1, "answered": 0.0}}
    assert set(summary["by_steps"]) == {"1", "2", "4+"}
    assert summary["by_steps"]["2"]["direct"]["accuracy"] == 0.0
    table = format_summary(summary).splitlines()
    assert table[0].split() == ["questions", "direct", "acc", "cot", "acc"]
    assert [line.split()[0] for line in table[1:]] == ["chart", "count", "1", "2", "4+", "overall"]
    assert table[2].split() == ["count", "1", "-", "0.000"]


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="modes"):
        GreedyEvalConfig(modes=["cot", "cot"])
    with pytest.raises(ConfigError, match="modes"):
        GreedyEvalConfig(modes=["sketch"])
    with pytest.raises(ConfigError, match="questions"):
        GreedyEvalConfig(questions=-1)


@pytest.mark.integration
def test_greedy_answers_in_both_modes(tiny_model_dir, tiny_vllm_engine) -> None:
    from reasoner.answers import score
    from reasoner.data.synthetic import SuiteConfig, generate_suite

    examples = [e for e in generate_suite(SuiteConfig(num_items=40, seed=0)) if e["split"] == "val"][:4]
    evaluator = GreedyEvaluator(str(tiny_model_dir), GreedyEvalConfig(max_tokens=6),
                                engine_factory=lambda model_dir, **kwargs: tiny_vllm_engine)
    rows = evaluator.evaluate(examples)
    modes = ("direct", "cot", "direct_blind", "cot_blind")  # blind: the same questions with a blank image
    assert [(r["mode"], r["id"]) for r in rows] == [(m, e["id"]) for m in modes for e in examples]
    by_id = {e["id"]: e for e in examples}
    for r in rows:
        example = by_id[r["id"]]
        assert r["source"] == example["source"] and r["steps"] == reasoning_steps(example)
        assert 1 <= r["num_tokens"] <= 6
        assert r["score"] == score(prediction_of(r["text"], r["mode"]), example["answers"], example["metric"],
                                   example["choices"])
    assert evaluator.evaluate(examples) == rows  # greedy: the same replies again
    assert evaluator.answer([], "cot") == []
    # The tiny random model does look at its image: a blank one changes some reply.
    replies = {(r["mode"], r["id"]): r["text"] for r in rows}
    assert any(replies[m, e["id"]] != replies[f"{m}_blind", e["id"]] for m in ("direct", "cot") for e in examples)


@pytest.mark.integration
def test_image_gain_is_the_reference_log_prob_the_image_adds(tiny_model_dir, tiny_vllm_engine) -> None:
    from PIL import Image

    from reasoner.data.synthetic import SuiteConfig, generate_suite
    from reasoner.models import ScoreRequest, TransformersScorer
    from reasoner.prompts import build_prompt

    examples = [e for e in generate_suite(SuiteConfig(num_items=40, seed=0)) if e["split"] == "val"][:3]
    no_rationale = {**examples[0], "id": "no-rationale", "rationale": None}
    evaluator = GreedyEvaluator(str(tiny_model_dir), GreedyEvalConfig(),
                                engine_factory=lambda model_dir, **kwargs: tiny_vllm_engine)
    rows = evaluator.image_gain(examples + [no_rationale])
    assert [r["id"] for r in rows] == [e["id"] for e in examples]  # nothing to score without a rationale
    # The same figures from the other backend of the shared scorer (transformers).
    scorer = TransformersScorer.from_pretrained(tiny_model_dir)
    for row, example in zip(rows, examples):
        prompt = build_prompt(example["question"], example["choices"], "cot")
        image = Image.open(io.BytesIO(example["image"])).convert("RGB")
        real, blank = scorer.score([ScoreRequest(image, prompt, example["rationale"]),
                                    ScoreRequest(Image.new("RGB", image.size, (255, 255, 255)), prompt,
                                                 example["rationale"])])
        assert row["source"] == example["source"] and row["tokens"] == len(real)
        assert row["logp"] == pytest.approx(real.total, abs=1e-3)
        assert row["logp_blank"] == pytest.approx(blank.total, abs=1e-3)
        assert row["gain"] == pytest.approx(row["logp"] - row["logp_blank"])
    assert any(abs(r["gain"]) > 1e-4 for r in rows)  # the random tiny model's log-probs depend on its image
    summary = summarise_gain(rows)
    assert summary["overall"] == {"gain": pytest.approx(sum(r["gain"] for r in rows) / 3), "questions": 3}
    assert sum(v["questions"] for v in summary["by_source"].values()) == 3
    assert format_gain(summary).startswith("image gain") and summarise_gain([]) == {}
