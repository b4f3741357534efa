"""Tests of reasoner.prompts: the paper's instructions, prompt layout and rationale format."""

from __future__ import annotations

import pytest

from reasoner.prompts import (
    ANSWER_MARKER,
    build_prompt,
    chat_messages,
    format_cot,
    format_question,
    instruction,
    option_letters,
)


def test_instructions_are_the_papers():
    assert instruction("direct", False) == "Answer the question with a short answer."
    assert instruction("direct", True) == (
        "Answer with the option's letter from the given choices directly.")
    assert instruction("cot", False) == "Generate a reason first and then output a short answer."
    assert instruction("cot", True) == "Generate a reason first and then output a letter answer."


@pytest.mark.parametrize("mode", ["CoT", "", "greedy", None])
def test_bad_mode_is_refused(mode):
    with pytest.raises(ValueError, match="mode must be one of"):
        instruction(mode, False)
    with pytest.raises(ValueError, match="mode must be one of"):
        build_prompt("What?", None, mode)


def test_option_letters():
    assert option_letters(0) == []
    assert option_letters(4) == ["A", "B", "C", "D"]
    assert option_letters(26)[-1] == "Z"
    for bad in (27, -1, 2.0):
        with pytest.raises(ValueError):
            option_letters(bad)


def test_format_question():
    assert format_question("  What colour is the bar? ", None) == "What colour is the bar?"
    assert format_question("Which is larger?", ["12", " 7 ", "equal"]) == (
        "Which is larger?\nA. 12\nB. 7\nC. equal")
    with pytest.raises(ValueError, match="non-empty list"):
        format_question("Q?", [])
    with pytest.raises(ValueError, match="choice B"):
        format_question("Q?", ["one", "two\nlines"])
    with pytest.raises(ValueError, match="question"):
        format_question("   ", None)


def test_build_prompt_short_and_multiple_choice():
    assert build_prompt("What is 2 + 3?", None, "direct") == (
        "What is 2 + 3?\nAnswer the question with a short answer.")
    assert build_prompt("How many circles?", ["3", "4"], "cot") == (
        "How many circles?\nA. 3\nB. 4\n"
        "Generate a reason first and then output a letter answer.")
    assert build_prompt("How many circles?", ["3", "4"], "direct").endswith(
        "\nB. 4\nAnswer with the option's letter from the given choices directly.")


def test_chat_messages():
    assert chat_messages("Q?") == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
    ]
    assert chat_messages("Q?", "Because.\n### Answer: 4") == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Because.\n### Answer: 4"}]},
    ]
    with pytest.raises(TypeError):
        chat_messages(None)


def test_format_cot():
    assert ANSWER_MARKER == "### Answer:"
    text = format_cot(["The red bar is 12.", " The blue bar is 7. ", "12 - 7 = 5."], "5")
    assert text == "The red bar is 12.\nThe blue bar is 7.\n12 - 7 = 5.\n### Answer: 5"
    assert text.splitlines()[-1] == "### Answer: 5"


@pytest.mark.parametrize(("steps", "answer", "match"), [
    ([], "5", "steps"),
    ("one step", "5", "steps"),
    (["a", ""], "5", "step 1"),
    (["two\nlines"], "5", "step 0"),
    (["so ###answer: 3"], "5", "answer marker"),
    (["a"], " ", "answer"),
    (["a"], "5\n6", "answer"),
])
def test_format_cot_refuses_what_would_not_split_back(steps, answer, match):
    with pytest.raises(ValueError, match=match):
        format_cot(steps, answer)
