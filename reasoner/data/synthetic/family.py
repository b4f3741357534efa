"""What every family of the synthetic suite shares: difficulty knobs, palette, questions, choices.

A family is five pure functions over a *scene* (a frozen dataclass holding exactly what decides
the pixels, so ``repr(scene)`` identifies the image up to noise): ``sample`` draws a scene,
``render`` draws it, ``ask`` poses a question about it with its worked steps, ``describe`` reads
every value the image shows (the item's caption, in the same step templates), and ``max_number``
bounds the numbers its text can contain (for the vocabulary).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

Colour = tuple[int, int, int]

BACKGROUND: Colour = (250, 250, 250)
INK: Colour = (20, 20, 20)  # text and axes: the only dark colour in any image
PALETTE: dict[str, Colour] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (225, 200, 20),
    "green": (40, 160, 60),
    "cyan": (30, 185, 205),
    "blue": (40, 80, 220),
    "purple": (150, 60, 190),
}
LETTERS = ("A", "B", "C", "D")  # multiple-choice option letters

OPTION_STEP = "Option {letter} is {answer}."
ANSWER_LINE = "### Answer: {answer}"
COMMON_TEMPLATES = (OPTION_STEP, ANSWER_LINE)

_NEAR_OFFSETS = (1, -1, 2, -2, 3, -3)


def _lerp(lo: float, hi: float, t: float) -> int:
    """Round half up of the linear interpolation (Python's round() is banker's rounding)."""
    return int(lo + (hi - lo) * t + 0.5)


@dataclass(frozen=True)
class Knobs:
    """The concrete settings a ``difficulty`` in [0, 1] stands for (see ``from_difficulty``)."""

    difficulty: float
    noise: int  # per-channel pixel jitter, +- this many levels
    level_weights: tuple[float, float, float]  # share of 1-, 2- and 3-value questions
    chart_bars: tuple[int, int]
    chart_max_value: int
    count_objects: tuple[int, int]
    count_colours: int
    count_shapes: int
    count_specks: int
    geometry_max_value: int
    document_fields: tuple[int, int]
    document_max_value: int

    @classmethod
    def from_difficulty(cls, d: float) -> "Knobs":
        """Map ``difficulty`` d in [0, 1] to settings.

        At d = 0: 3 bars of 1-9, 2-5 objects of 2 colours and 2 shapes, 2 document fields of
        1-9, no noise, 60% one-value questions. At d = 1: 5-7 bars of 1-20, 6-16 objects of 4
        colours and 3 shapes among 6 grey specks, 3-5 fields of 1-99 with shuffled letters,
        +-24 levels of pixel noise, 90% multi-value questions of which 70% need three or more
        values.
        """
        multi = 0.4 + 0.5 * d  # share of questions combining two or more values
        three = 0.1 + 0.6 * d  # share of those combining three or more
        return cls(
            difficulty=d,
            noise=_lerp(0, 24, d),
            level_weights=(1.0 - multi, multi * (1.0 - three), multi * three),
            chart_bars=(3 + _lerp(0, 2, d), 3 + _lerp(0, 4, d)),
            chart_max_value=_lerp(9, 20, d),
            count_objects=(2 + _lerp(0, 4, d), _lerp(5, 16, d)),
            count_colours=2 + _lerp(0, 2, d),
            count_shapes=2 if d < 0.25 else 3,
            count_specks=_lerp(0, 6, d),
            geometry_max_value=_lerp(9, 20, d),
            document_fields=(2 + _lerp(0, 1, d), 2 + _lerp(0, 3, d)),
            document_max_value=_lerp(9, 99, d),
        )

    def choose_level(self, rng: random.Random) -> int:
        """1, 2 or 3: how many values a question combines, drawn by ``level_weights``."""
        return rng.choices((1, 2, 3), weights=self.level_weights)[0]


@dataclass
class Question:
    """A question with its worked steps (one line each) and its short answer."""

    text: str
    steps: list[str]
    answer: str
    metric: str  # of the short-answer form: "relaxed" or "exact"
    distractors: list[str] = field(default_factory=list)  # plausible wrong answers, best first


@dataclass(frozen=True)
class Family:
    """One family of the suite: pure functions over its scene type."""

    name: str
    sample: Callable[[random.Random, Knobs, int], Any]  # (rng, knobs, image_size) -> scene
    render: Callable[[Any], Image.Image]  # scene -> RGB image without noise
    ask: Callable[[Any, random.Random, Knobs], Question]
    describe: Callable[[Any], list[str]]  # scene -> a step per value the image shows
    max_number: Callable[[Knobs, int], int]  # (knobs, image_size) -> largest number in text
    templates: tuple[str, ...]  # every question and step template, for the vocabulary
    names: tuple[str, ...]  # words substituted into the templates


def tint(colour: Colour, amount: float) -> Colour:
    """``colour`` mixed with white: 0 keeps it, 1 gives white."""
    return tuple(int(c + (255 - c) * amount + 0.5) for c in colour)  # type: ignore[return-value]


def near_numbers(value: int) -> list[str]:
    """Wrong numeric answers one to three away from ``value``, never negative."""
    return [str(value + k) for k in _NEAR_OFFSETS if value + k >= 0]


def multiple_choice(question: Question, rng: random.Random) -> tuple[list[str], str]:
    """Four distinct options (the answer and three plausible distractors) and the answer's letter.

    Distractors come from the question's own list first (values read, the other operation's
    result), then numbers near a numeric answer; three are drawn from the six most plausible.
    """
    pool: list[str] = []
    extra = near_numbers(int(question.answer)) if question.answer.isdigit() else []
    for option in [*question.distractors, *extra]:
        if option != question.answer and option not in pool and not option.startswith("-"):
            pool.append(option)
    if len(pool) < len(LETTERS) - 1:
        raise ValueError(
            f"question {question.text!r} has only {len(pool)} distinct distractors; need 3"
        )
    options = rng.sample(pool[:6], len(LETTERS) - 1) + [question.answer]
    rng.shuffle(options)
    return options, LETTERS[options.index(question.answer)]
