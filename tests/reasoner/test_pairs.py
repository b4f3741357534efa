"""Tests for reasoner.pairs (stage C2), with expected values worked out by hand."""

import dataclasses
import json
import random
import re

import pytest

from reasoner.pairs import (
    NO_DISTINCT_PAIR,
    PairConfig,
    PairStats,
    accuracy_bin,
    build_pairs,
    drop_bucket,
    question_accuracy,
    question_rng,
    select_pairs,
    truncate_response,
)

NO_CUT = PairConfig(max_response_tokens=None)
EXAMPLE = {"id": "q1", "image": b"\x89PNG", "question": "How many?"}


class WordTokenizer:
    """Tokens are words and newlines; decode puts one space between words."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.words: list[str] = []

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert add_special_tokens is False
        return [self.vocab.setdefault(t, len(self.vocab)) for t in re.findall(r"\n|\S+", text)]

    def decode(self, ids: list[int]) -> str:
        words = {i: w for w, i in self.vocab.items()}
        out = ""
        for word in (words[i] for i in ids):
            out += word if word == "\n" or not out or out.endswith("\n") else " " + word
        return out


class LeadingBlankTokenizer(WordTokenizer):
    """Like SentencePiece's lone "▁": every text starts with a token that decodes to ""."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        blank = self.vocab.setdefault("", len(self.vocab))
        return [blank] + super().encode(text, add_special_tokens)


def candidates(labels, texts=None, qid="q1", prompt="P"):
    texts = texts or [f"reason {i}\n### Answer: {i}" for i in range(len(labels))]
    return [{"id": qid, "sample_index": i, "prompt": prompt, "text": t, "answer": None,
             "score": float(c), "correct": c, "num_tokens": 5, "cumulative_logprob": -1.0}
            for i, (c, t) in enumerate(zip(labels, texts))]


def texts_of(pairs):
    return [(c["text"], r["text"]) for c, r in pairs]


# --- PairConfig -------------------------------------------------------------------------------


def test_config_defaults_are_the_papers_and_every_field_has_help() -> None:
    config = PairConfig()
    assert (config.min_accuracy, config.max_accuracy, config.pairs_per_question) == (0.25, 0.85, 3)
    assert (config.max_response_tokens, config.seed, config.truncate_mode) == (90, 0, "head")
    assert config.min_chosen_samples == 1
    assert all(f.metadata["help"] for f in dataclasses.fields(PairConfig))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_accuracy": 0.9}, "min_accuracy=0.9 is invalid: it must be <= max_accuracy=0.85"),
    ({"max_accuracy": 1.5}, "max_accuracy=1.5 is invalid: give an accuracy in [0, 1]"),
    ({"pairs_per_question": 0}, "pairs_per_question=0 is invalid"),
    ({"max_response_tokens": 0}, "max_response_tokens=0 is invalid"),
    ({"truncate_mode": "tail"}, "truncate_mode='tail' is invalid: use one of head, keep_answer"),
    ({"min_chosen_samples": 0}, "min_chosen_samples=0 is invalid: give a positive integer"),
])
def test_config_rejects_bad_values_naming_field_value_and_fix(kwargs, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PairConfig(**kwargs)


# --- accuracy bounds ----------------------------------------------------------------------------


def test_question_accuracy_is_the_mean_of_correct() -> None:
    assert question_accuracy(candidates([True, False, False, False])) == 0.25
    assert question_accuracy(candidates([True] * 27 + [False] * 5)) == 0.84375
    with pytest.raises(ValueError, match="no candidates"):
        question_accuracy([])


@pytest.mark.parametrize(("labels", "n_pairs", "reason"), [
    ([True] + [False] * 3, 3, None),                 # 0.25: lower bound is inclusive
    ([True] * 17 + [False] * 3, 3, None),            # 0.85: upper bound is inclusive
    ([True] + [False] * 4, 0, "accuracy 0.20 below 0.25"),
    ([True] * 9 + [False], 0, "accuracy 0.90 above 0.85"),
    ([True] * 30 + [False] * 2, 0, "accuracy 0.94 above 0.85"),
    ([False] * 32, 0, "accuracy 0.00 below 0.25"),
    ([], 0, "no candidates"),
])
def test_build_pairs_keeps_accuracy_in_inclusive_bounds(labels, n_pairs, reason) -> None:
    rows, why = build_pairs(EXAMPLE, candidates(labels), NO_CUT)
    assert (len(rows), why) == (n_pairs, reason)


def test_build_pairs_rows_have_the_pairs_columns() -> None:
    rows, why = build_pairs(EXAMPLE, candidates([True, False, False, False]), NO_CUT)
    assert why is None
    assert [r["pair_index"] for r in rows] == [0, 1, 2]
    assert {r["rejected"] for r in rows} == {f"reason {i}\n### Answer: {i}" for i in (1, 2, 3)}
    assert all(r["chosen"] == "reason 0\n### Answer: 0" for r in rows)
    assert rows[0].keys() == {
        "id", "pair_index", "prompt", "image", "chosen", "rejected", "accuracy"}
    assert (rows[0]["id"], rows[0]["prompt"], rows[0]["image"], rows[0]["accuracy"]) == (
        "q1", "P", b"\x89PNG", 0.25)


def test_build_pairs_refuses_mixed_ids_prompts_and_a_missing_tokenizer() -> None:
    with pytest.raises(ValueError, match="other ids"):
        build_pairs(EXAMPLE, candidates([True, False], qid="q2"), NO_CUT)
    mixed = candidates([True, False]) + candidates([False], prompt="Q")
    with pytest.raises(ValueError, match="2 prompts"):
        build_pairs(EXAMPLE, mixed, NO_CUT)
    with pytest.raises(ValueError, match="no tokenizer was given"):
        build_pairs(EXAMPLE, candidates([True, False]), PairConfig())


# --- pair selection -------------------------------------------------------------------------------


def test_at_most_pairs_per_question_with_fresh_chosen_and_rejected() -> None:
    many = candidates([True, False] * 16)
    pairs = select_pairs(many, NO_CUT)
    assert len(pairs) == 3
    assert all(c["correct"] and not r["correct"] for c, r in pairs)
    assert len({c["text"] for c, _ in pairs}) == len({r["text"] for _, r in pairs}) == 3
    assert len(select_pairs(many, dataclasses.replace(NO_CUT, pairs_per_question=5))) == 5


def test_two_by_two_uses_both_sides_before_reusing_and_never_repeats() -> None:
    pairs = texts_of(select_pairs(candidates([True, True, False, False],
                                             ["c0", "c1", "w0", "w1"]), NO_CUT))
    assert len(pairs) == len(set(pairs)) == 3
    assert {c for c, _ in pairs[:2]} == {"c0", "c1"} and {r for _, r in pairs[:2]} == {"w0", "w1"}
    assert set(pairs) < {("c0", "w0"), ("c0", "w1"), ("c1", "w0"), ("c1", "w1")}


def test_pairs_run_out_with_the_combinations() -> None:
    pairs = select_pairs(candidates([True, True, False], ["c0", "c1", "w0"]), NO_CUT)
    assert sorted(texts_of(pairs)) == [("c0", "w0"), ("c1", "w0")]


def test_same_pairs_for_shuffled_candidates_given_seed_and_question_id() -> None:
    rows = candidates([True, False] * 8)
    expected = texts_of(select_pairs(rows, NO_CUT))
    for shuffle_seed in range(5):
        shuffled = rows[:]
        random.Random(shuffle_seed).shuffle(shuffled)
        assert texts_of(select_pairs(shuffled, NO_CUT)) == expected
    assert texts_of(select_pairs(rows, NO_CUT, 7)) == texts_of(
        select_pairs(rows, dataclasses.replace(NO_CUT, seed=7)))
    by_seed = {tuple(texts_of(select_pairs(rows, NO_CUT, s))) for s in range(10)}
    assert len(by_seed) > 1  # the seed matters
    assert question_rng(0, "q1").random() == question_rng(0, "q1").random()
    assert question_rng(0, "q1").random() != question_rng(0, "q2").random()


def test_duplicate_texts_are_merged_and_identical_texts_never_paired() -> None:
    dupes = candidates([True, True, True, False, False], ["a", "a ", " a", "b", "b\n"])
    assert texts_of(select_pairs(dupes, NO_CUT)) == [("a", "b")]
    same = candidates([True, False], ["x  y", "x y"])  # equal after whitespace normalisation
    assert select_pairs(same, NO_CUT) == []
    assert build_pairs(EXAMPLE, same, NO_CUT) == ([], NO_DISTINCT_PAIR)


def test_min_chosen_samples_keeps_correct_texts_sampled_once_off_the_chosen_side() -> None:
    # "read 3" was sampled three times, the lucky "read 9" once; both say the right answer.
    rows = candidates([True, True, True, True, False, False, False, False],
                      ["read 3", "read 9", "read 3 ", "read 3", "w0", "w1", "w2", "w0"])
    twice = dataclasses.replace(NO_CUT, min_chosen_samples=2)
    assert {c for c, _ in texts_of(select_pairs(rows, NO_CUT))} == {"read 3", "read 9"}
    pairs = texts_of(select_pairs(rows, twice))
    assert [c for c, _ in pairs] == ["read 3"] * 3
    assert sorted(r for _, r in pairs) == ["w0", "w1", "w2"]
    # Incorrect texts need no repeats; the accuracy still counts every sample.
    made, why = build_pairs(EXAMPLE, rows, twice)
    assert (len(made), why, made[0]["accuracy"]) == (3, None, 0.5)
    # Right answers only by lucky, one-off texts: the question is dropped and counted so.
    lucky = candidates([True, True, False, False], ["read 9", "read 8", "w0", "w1"])
    assert build_pairs(EXAMPLE, lucky, twice) == ([], "no correct text sampled often enough "
                                                      "(>= 2 times)")
    assert drop_bucket(build_pairs(EXAMPLE, lucky, twice)[1]) == "rare_correct"
    assert build_pairs(EXAMPLE, candidates([True, False], ["a", "a"]), twice) == (
        [], NO_DISTINCT_PAIR)


def test_blank_samples_count_for_accuracy_but_are_never_paired() -> None:
    rows = candidates([True, False, False], ["a\n### Answer: 1", "", " \n"])
    assert build_pairs(EXAMPLE, rows, PairConfig(), WordTokenizer()) == ([], NO_DISTINCT_PAIR)
    rows += candidates([False], ["b\n### Answer: 2"])[:1]
    rows[-1]["sample_index"] = 3
    made, why = build_pairs(EXAMPLE, rows, PairConfig(), WordTokenizer())
    assert [(r["chosen"], r["rejected"], r["accuracy"]) for r in made] == [
        ("a\n### Answer: 1", "b\n### Answer: 2", 0.25)]


# --- truncation ---------------------------------------------------------------------------------

TEXT = "Read the bar .\nIt shows 7 .\n### Answer: 7"  # 13 tokens: 4 + \n + 4 + \n + 3


@pytest.mark.parametrize(("mode", "max_tokens", "expected"), [
    ("head", 13, TEXT),                                  # fits: unchanged
    ("head", 6, "Read the bar .\nIt"),
    ("head", 5, "Read the bar ."),                       # trailing newline dropped
    ("keep_answer", 13, TEXT),
    ("keep_answer", 8, "Read the bar .\n### Answer: 7"),  # 4 + \n + 3
    ("keep_answer", 7, "Read the bar\n### Answer: 7"),    # first guess (4 words) is 8: shrink
    ("keep_answer", 4, "Read the bar ."),                # no room for rationale: head cut
])
def test_truncate_response_both_modes(mode, max_tokens, expected) -> None:
    tokenizer = WordTokenizer()
    out = truncate_response(TEXT, tokenizer, max_tokens, mode)
    assert out == expected
    assert len(tokenizer.encode(out, add_special_tokens=False)) <= max_tokens


def test_keep_answer_drops_text_after_the_answer_line_and_falls_back_without_marker() -> None:
    text = "a b c\n### Answer: 7\nextra words here"
    assert truncate_response(text, WordTokenizer(), 6, "keep_answer") == "a b\n### Answer: 7"
    assert truncate_response("one two three four", WordTokenizer(), 2, "keep_answer") == "one two"


def test_truncate_response_never_returns_empty_and_checks_arguments() -> None:
    assert truncate_response("hello world", LeadingBlankTokenizer(), 1) == "hello"
    assert truncate_response("  hello world", WordTokenizer(), 1) == "hello"
    with pytest.raises(ValueError, match="blank response"):
        truncate_response(" \n", WordTokenizer(), 5)
    with pytest.raises(ValueError, match="max_tokens=0"):
        truncate_response(TEXT, WordTokenizer(), 0)
    with pytest.raises(ValueError, match="mode='tail'"):
        truncate_response(TEXT, WordTokenizer(), 5, "tail")


def test_build_pairs_truncates_before_pairing() -> None:
    texts = ["same start x\n### Answer: 1", "fine reason here\n### Answer: 1",
             "same start y\n### Answer: 2", "other\n### Answer: 3"]
    rows = candidates([True, True, False, False], texts)
    head = PairConfig(max_response_tokens=2)
    # "same start" is now both a correct and a wrong text: ambiguous, used on neither side.
    made, why = build_pairs(EXAMPLE, rows, head, WordTokenizer())
    assert [(r["chosen"], r["rejected"]) for r in made] == [("fine reason", "other")]
    assert why is None
    keep = PairConfig(max_response_tokens=5, truncate_mode="keep_answer")
    made, _ = build_pairs(EXAMPLE, rows, keep, WordTokenizer())
    pairs = {(r["chosen"], r["rejected"]) for r in made}
    # 7 tokens each but "other" (5, fits): rationale cut to 1 word, answer line kept.
    assert len(pairs) == 3
    assert {c for c, _ in pairs} == {"same\n### Answer: 1", "fine\n### Answer: 1"}
    assert {r for _, r in pairs} == {"same\n### Answer: 2", "other\n### Answer: 3"}


# --- stats --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("accuracy", "expected"), [
    (0.0, 0), (0.09, 0), (0.1, 1), (0.25, 2), (0.3, 3), (0.7, 7), (0.85, 8), (0.99, 9), (1.0, 9)])
def test_accuracy_bin(accuracy, expected) -> None:
    assert accuracy_bin(accuracy) == expected


def test_stats_accumulate_merge_and_round_trip() -> None:
    a, b = PairStats(), PairStats()
    a.add(0.5, 3)
    a.add(0.9375, 0, "accuracy 0.94 above 0.85")
    a.add(None, 0, "no candidates")
    b.add(0.0, 0, "accuracy 0.00 below 0.25")
    b.add(0.25, 2)
    b.add(0.5, 0, NO_DISTINCT_PAIR)
    merged = a.merge(b).to_dict()
    assert merged == {
        "questions": 6, "kept": 2, "pairs": 5,
        "dropped": {"too_easy": 1, "too_hard": 1, "no_distinct_pair": 1, "rare_correct": 0,
                    "no_candidates": 1},
        "histogram": [1, 0, 1, 0, 0, 2, 0, 0, 0, 1],
        "histogram_edges": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}
    assert a.to_dict()["questions"] == 3  # merge does not mutate
    assert PairStats.from_dict(json.loads(json.dumps(merged))).to_dict() == merged
    with pytest.raises(ValueError, match="unknown drop reason"):
        drop_bucket("too long")
    with pytest.raises(ValueError, match="outside"):
        accuracy_bin(1.5)
