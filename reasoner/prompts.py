"""Prompts and the rationale format (Zhang et al. 2024, section 3.2).

The paper prompts a question in one of two modes. Direct prediction asks for the short answer
(or the option's letter); chain-of-thought (CoT) asks for a reason first. A CoT response is the
rationale, one reasoning step per line, then ``### Answer: <answer>`` (``format_cot``); the answer
is read back from after the marker (``reasoner.answers.extract_answer``).

A prompt is the question, its options as lines ``A. ...``, then the instruction on its own line::

    How many red squares are there?
    A. 2
    B. 3
    Generate a reason first and then output a letter answer.
"""

from __future__ import annotations

import re
import string

MODES = ("cot", "direct")

DIRECT_SHORT = "Answer the question with a short answer."
DIRECT_MC = "Answer with the option's letter from the given choices directly."
COT_SHORT = "Generate a reason first and then output a short answer."
COT_MC = "Generate a reason first and then output a letter answer."
# The whole prompt of a caption row (an example's image description as the completion): the
# image-text alignment data a pretrained base model has seen and the paper mixes into SFT.
CAPTION_PROMPT = "Describe the image."

ANSWER_MARKER = "### Answer:"
# Any spelling ``extract_answer`` would take as a marker: a step must not contain one.
_MARKER_LIKE = re.compile(r"###\s*answer\s*:", re.IGNORECASE)

_INSTRUCTIONS = {
    ("direct", False): DIRECT_SHORT,
    ("direct", True): DIRECT_MC,
    ("cot", False): COT_SHORT,
    ("cot", True): COT_MC,
}


def _one_line(text: object) -> bool:
    """True for a str that, stripped, is exactly one non-empty line."""
    return isinstance(text, str) and len(text.strip().splitlines()) == 1


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def instruction(mode: str, multiple_choice: bool) -> str:
    """The paper's instruction for ``mode`` ("cot" or "direct") and the question type."""
    _check_mode(mode)
    return _INSTRUCTIONS[mode, bool(multiple_choice)]


def option_letters(n: int) -> list[str]:
    """The first ``n`` option letters: ``option_letters(3) == ["A", "B", "C"]`` (n <= 26)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 26:
        raise ValueError(f"the number of options must be an int in [0, 26], got {n!r}")
    return list(string.ascii_uppercase[:n])


def format_question(question: str, choices: list[str] | None) -> str:
    """The question (stripped), then one line ``<letter>. <choice>`` per option if any."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty str, got {question!r}")
    if choices is None:
        return question.strip()
    if isinstance(choices, str) or len(choices) == 0:
        raise ValueError(f"choices must be None or a non-empty list of str, got {choices!r}")
    lines = [question.strip()]
    for letter, choice in zip(option_letters(len(choices)), choices):
        if not _one_line(choice):
            raise ValueError(f"choice {letter} must be one non-empty line of text, got {choice!r}")
        lines.append(f"{letter}. {choice.strip()}")
    return "\n".join(lines)


def build_prompt(question: str, choices: list[str] | None, mode: str) -> str:
    """The full prompt: ``format_question`` then the mode's instruction on its own line.

    ``choices`` not None makes the question multiple choice (letter answers).
    """
    _check_mode(mode)
    return f"{format_question(question, choices)}\n{instruction(mode, choices is not None)}"


def chat_messages(prompt: str, response: str | None = None) -> list[dict]:
    """The conversational form for chat templates and TRL: one image, then the prompt's text.

    Returns ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text":
    prompt}]}]``, plus an assistant turn ``{"role": "assistant", "content": [{"type": "text",
    "text": response}]}`` when ``response`` is given.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    messages: list[dict] = [{
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": prompt}],
    }]
    if response is not None:
        if not isinstance(response, str):
            raise TypeError(f"response must be a str or None, got {type(response).__name__}")
        messages.append({"role": "assistant", "content": [{"type": "text", "text": response}]})
    return messages


def format_cot(steps: list[str], answer: str) -> str:
    """A CoT response: one step per line, then ``### Answer: <answer>``.

    >>> format_cot(["There are 2 red and 3 blue squares.", "2 + 3 = 5."], "5")
    'There are 2 red and 3 blue squares.\\n2 + 3 = 5.\\n### Answer: 5'

    Steps and answer are stripped; a step must be one non-empty line without an answer marker,
    and the answer one non-empty line, so the response splits back into its steps and answer.
    """
    if isinstance(steps, str) or not steps:
        raise ValueError(f"steps must be a non-empty list of str, got {steps!r}")
    lines = []
    for index, step in enumerate(steps):
        if not _one_line(step):
            raise ValueError(f"step {index} must be one non-empty line of text, got {step!r}")
        if _MARKER_LIKE.search(step):
            raise ValueError(f"step {index} contains an answer marker: {step!r}")
        lines.append(step.strip())
    if not _one_line(answer):
        raise ValueError(f"answer must be one non-empty line of text, got {answer!r}")
    lines.append(f"{ANSWER_MARKER} {answer.strip()}")
    return "\n".join(lines)
