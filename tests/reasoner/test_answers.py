"""Tests for reasoner.answers, with expected values worked out by hand."""

import pytest

from reasoner.answers import (
    METRICS,
    anls,
    aokvqa_accuracy,
    extract_answer,
    is_correct,
    levenshtein,
    predicted_letter,
    process_answer,
    relaxed_correctness,
    score,
)

# --- extract_answer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The bars add up.\n### Answer: B", "B"),
        ("###Answer:42", "42"),
        ("### answer : cat  \n", "cat"),
        ("### ANSWER:\tyes\n\n", "yes"),
        ("#### Answer: 7", "7"),
        ("### Answer: 1\nwait, recount\n### Answer: 2", "2"),
        ("### Answer: 12\nExplanation: the axis starts at 0.", "12"),
        ("### Answer:\n\n   Paris  \nBecause the tower is there.", "Paris"),
        ("### Answer: the red one.  ", "the red one."),
    ],
)
def test_extract_answer_finds_the_last_marker(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "The answer is 3.", "Answer: 3", "## Answer: 3", "### Answer:", "### Answer:  \n \n"],
)
def test_extract_answer_none_without_marker_or_answer(text: str) -> None:
    assert extract_answer(text) is None


# --- relaxed (ChartQA) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("45", ["45"], 1.0),
        ("47", ["45"], 1.0),  # |47 - 45| / 45 = 0.044 <= 0.05
        ("48", ["45"], 0.0),  # 3 / 45 = 0.067
        ("105", ["100"], 1.0),  # exactly 5%: 5 / 100 = 0.05, inclusive
        ("105.1", ["100"], 0.0),
        ("-98", ["-100"], 1.0),  # 2 / 100
        ("0.45", ["45%"], 1.0),  # "45%" reads as 0.45
        ("46%", ["45%"], 1.0),  # |0.46 - 0.45| / 0.45 = 0.022
        ("45%", ["45"], 0.0),  # 0.45 vs 45, and "45%" != "45" as text
        ("0", ["0"], 1.0),  # zero target: string match
        ("0.0", ["0"], 0.0),  # zero target: no relative error, "0.0" != "0"
        ("0.01", ["0"], 0.0),
        ("Yes", ["yes"], 1.0),
        ("  yes \n", ["yes"], 1.0),  # prediction stripped
        ("no", ["yes"], 0.0),
        ("2019", ["2018"], 1.0),  # a known weakness of the reference: 1 / 2018
        ("100", ["apple", "104"], 1.0),  # max over answers: 4 / 104 = 0.038
        ("", ["0"], 0.0),
        ("", [""], 1.0),
    ],
)
def test_relaxed(prediction: str, answers: list[str], expected: float) -> None:
    assert score(prediction, answers, "relaxed") == expected


def test_relaxed_correctness_takes_the_tolerance() -> None:
    assert relaxed_correctness("100", "109", max_relative_change=0.1)
    assert not relaxed_correctness("100", "111", max_relative_change=0.1)


# --- vqa (A-OKVQA / TextVQA) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("two", "2"),
        ("None", "0"),
        ("A dog.", "dog"),
        ("the Eiffel Tower", "eiffel tower"),
        ("dont", "don't"),
        ("hello-world", "hello world"),  # no space next to "-": becomes a space
        ("yes, it is", "yes it is"),  # ", " touches a space: dropped
        ("1,000", "1000"),  # digit-comma-digit: marks dropped
        ("3.5", "3.5"),  # a period next to a digit stays
        ("Two Dogs!", "2 dogs"),
        ("line\none", "line 1"),
    ],
)
def test_process_answer(answer: str, expected: str) -> None:
    assert process_answer(answer) == expected


def _ten(matching: str, k: int, other: str = "other") -> list[str]:
    return [matching] * k + [other] * (10 - k)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (0, 0.0),
        (1, 0.3),  # 1 match: 9 of the 10 leave-one-out subsets hold it: 9 * (1/3) / 10
        (2, 0.6),  # (2 * 1/3 + 8 * 2/3) / 10
        (3, 0.9),  # (3 * 2/3 + 7 * 1) / 10
        (4, 1.0),  # every subset holds at least 3 matches
        (10, 1.0),
    ],
)
def test_vqa_leave_one_out_over_ten_answers(k: int, expected: float) -> None:
    assert score("two", _ten("2", k), "vqa") == pytest.approx(expected)


def test_vqa_three_identical_answers_score_two_thirds() -> None:
    # Leave-one-out as VLMEvalKit: each subset holds 2 of the 3 matches -> min(1, 2/3).
    assert score("A dog.", ["dog", "dog", "dog"], "vqa") == pytest.approx(2 / 3)


def test_vqa_single_answer_is_exact_normalised_match() -> None:
    # Documented deviation: the reference scores 0 for any prediction with one answer.
    assert score("two", ["2"], "vqa") == 1.0
    assert score("The Dog", ["a dog"], "vqa") == 1.0
    assert score("three", ["2"], "vqa") == 0.0


def test_vqa_normalisation_on_both_sides() -> None:
    assert score("dont", ["don't"] * 4, "vqa") == 1.0
    assert score("an apple!", ["Apple"] * 4, "vqa") == 1.0
    assert score("", ["yes"] * 4, "vqa") == 0.0
    assert score("yes", ["no"] * 4, "vqa") == 0.0


# --- aokvqa (A-OKVQA direct answer) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (0, 0.0),
        (1, 1 / 3),  # min(1, 1/3), no leave-one-out (vqa would give 0.3)
        (2, 2 / 3),  # vqa: 0.6
        (3, 1.0),  # vqa: 0.9
        (4, 1.0),  # capped
        (10, 1.0),
    ],
)
def test_aokvqa_min_one_matches_over_three_of_ten(k: int, expected: float) -> None:
    assert score("bat", _ten("bat", k), "aokvqa") == pytest.approx(expected)
    assert aokvqa_accuracy("bat", _ten("bat", k)) == pytest.approx(expected)


def test_aokvqa_matches_after_the_vqa_normalisation() -> None:
    # eval_predictions.py counts `pred == da` over clean strings; a generated answer is cleaned
    # first (case, articles, punctuation, number words), as the annotations already are.
    for prediction in ("Bat", "a bat", "bat.", " bat"):
        assert score(prediction, _ten("bat", 3), "aokvqa") == 1.0
    assert score("two", _ten("2", 3), "aokvqa") == 1.0
    assert score("two", _ten("2", 3), "vqa") == pytest.approx(0.9)  # vqa: leave-one-out over 10
    assert score("cat", _ten("bat", 3), "aokvqa") == 0.0
    # "bat" matches 4 of "bat", "Bat", "bat", "a bat": capped at 1; 2 matches give 2/3.
    assert score("bat", ["bat", "Bat", "bat", "a bat"] + ["x"] * 6, "aokvqa") == 1.0
    assert score("bat", ["bat", "Bat"] + ["x"] * 8, "aokvqa") == pytest.approx(2 / 3)


def test_aokvqa_fewer_answers_keep_the_divisor_three() -> None:
    assert score("dog", ["dog"], "aokvqa") == pytest.approx(1 / 3)
    assert score("dog", ["dog", "dog", "dog"], "aokvqa") == 1.0


# --- anls (DocVQA / InfoVQA) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("", "abc", 3),
        ("abc", "", 3),
        ("same", "same", 0),
    ],
)
def test_levenshtein(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("helo", ["hello"], 0.8),  # 1 - 1/5
        (" Hello   World ", ["hello world"], 1.0),  # lowercased, whitespace collapsed
        ("abc", ["xyz"], 0.0),  # 1 - 3/3
        ("ab", ["abcd"], 0.5),  # 1 - 2/4 = 0.5, kept (not below the threshold)
        ("a", ["abcd"], 0.0),  # 1 - 3/4 = 0.25 < 0.5
        ("kitten", ["sitting", "kitten!"], 6 / 7),  # best answer: 1 - 1/7
        ("", [""], 1.0),  # both empty: distance 0
        ("", ["abc"], 0.0),
    ],
)
def test_anls(prediction: str, answers: list[str], expected: float) -> None:
    assert score(prediction, answers, "anls") == pytest.approx(expected)


def test_anls_threshold_is_configurable() -> None:
    assert anls("a", ["abcd"], threshold=0.2) == pytest.approx(0.25)


# --- mc ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction",
    [
        "B",
        "b",
        "(B)",
        "B.",
        "B)",
        "[B]",
        "B. cat",
        "(B) cat",
        "The answer is B",
        "The answer is B.",
        "Answer: (B) cat",
        "The correct answer is (B).",
        "Option B",
        "Answer A is wrong; the answer is B.",
        "It is B, the cat.",
        "I think it's B",
        "B is right",
    ],
)
def test_mc_reads_the_letter(prediction: str) -> None:
    assert predicted_letter(prediction) == "B"
    assert score(prediction, ["B"], "mc") == 1.0
    assert score(prediction, ["A"], "mc") == 0.0


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("cat", "B"),
        ("Cat.", "B"),
        ("A cat", "B"),  # the option text wins over the article
        ("The answer is a cat", "B"),
        ("a big cat", "B"),  # article "A" skipped, then "cat" as the one option in the text
        ("It looks like a cat to me", "B"),
        ("A", "A"),
        ("A is right", "A"),
        ("dog", "A"),
        ("a dog or a cat", None),  # both option texts appear
        ("A or B", None),
        ("bird", None),
        ("C", None),  # no third option
    ],
)
def test_mc_with_choices(prediction: str, expected: str | None) -> None:
    assert predicted_letter(prediction, ["dog", "cat"]) == expected


def test_mc_option_text_scores() -> None:
    assert score("cat", ["B"], "mc", choices=["dog", "cat"]) == 1.0
    assert score("A cat", ["A"], "mc", choices=["dog", "cat"]) == 0.0
    assert score("cat", ["(B)"], "mc", choices=["dog", "cat"]) == 1.0


def test_mc_ground_truth_forms() -> None:
    assert score("B", ["(B)"], "mc") == 1.0
    assert score("B", ["b"], "mc") == 1.0
    assert score("B", ["B."], "mc") == 1.0
    assert score("B", ["cat"], "mc", choices=["dog", "cat"]) == 1.0  # option text as truth
    with pytest.raises(ValueError, match="'cat'"):
        score("B", ["cat"], "mc")


def test_mc_without_a_letter_scores_zero() -> None:
    assert predicted_letter("a cat") is None
    assert score("a cat", ["A"], "mc") == 0.0
    assert score("", ["A"], "mc") == 0.0


# --- exact -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("3.0", ["3"], 1.0),
        ("3.5", ["3.50"], 1.0),
        ("1,000", ["1000"], 1.0),
        ("1,000", ["1"], 0.0),
        ("-3", ["3"], 0.0),
        ("$5", ["5"], 1.0),
        (" The Cat. ", ["cat"], 1.0),
        ("an apple", ["Apple!"], 1.0),
        ("cats", ["cat"], 0.0),
        ("New York", ["new  york"], 1.0),
        ("blue", ["red", "Blue"], 1.0),
        ("", ["0"], 0.0),
        ("", [""], 1.0),
        ("two", ["2"], 0.0),  # number words are a vqa normalisation, not exact's
    ],
)
def test_exact(prediction: str, answers: list[str], expected: float) -> None:
    assert score(prediction, answers, "exact") == expected


# --- score / is_correct: contract --------------------------------------------------------------


def test_metrics_export() -> None:
    assert METRICS == ("relaxed", "vqa", "anls", "mc", "exact", "aokvqa")


@pytest.mark.parametrize("metric", METRICS)
def test_none_prediction_scores_zero(metric: str) -> None:
    assert score(None, ["B"], metric, choices=["dog", "cat"]) == 0.0


def test_unknown_metric_names_it_and_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'bleu'.*relaxed, vqa, anls, mc, exact, aokvqa"):
        score("a", ["a"], "bleu")
    with pytest.raises(ValueError, match="'bleu'"):
        is_correct(1.0, "bleu")


@pytest.mark.parametrize("metric", METRICS)
def test_empty_answers_is_an_error(metric: str) -> None:
    with pytest.raises(ValueError, match="answers is empty"):
        score("B", [], metric)


def test_answers_as_a_bare_string_is_an_error() -> None:
    with pytest.raises(TypeError, match="'yes'"):
        score("yes", "yes", "exact")  # type: ignore[arg-type]


def test_is_correct() -> None:
    assert is_correct(0.5, "anls")
    assert not is_correct(0.49, "anls")
    assert is_correct(0.6, "vqa")  # two of ten annotators agree
    assert not is_correct(0.3, "vqa")  # one annotator only
    assert not is_correct(0.6, "vqa", threshold=0.9)
    assert not is_correct(score("bat", _ten("bat", 1), "aokvqa"), "aokvqa")  # 1/3
    assert is_correct(score("bat", _ten("bat", 2), "aokvqa"), "aokvqa")  # 2 of 3 matches: 0.667
    assert is_correct(1.0, "mc")
    assert not is_correct(0.0, "mc")


def test_correct_under_the_default_threshold_end_to_end() -> None:
    completion = "Counting the bars gives two.\n### Answer: Two\n"
    s = score(extract_answer(completion), _ten("2", 2), "vqa")
    assert s == pytest.approx(0.6)
    assert is_correct(s, "vqa")
