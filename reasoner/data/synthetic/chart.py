"""Bar charts: coloured bars on a ruled axis; read a bar, compare bars, add or subtract them.

Layout (``image_size`` S): the y axis is column 4, the x axis row S - 4. A bar of value v is
v * unit pixels tall, one tick every unit on the y axis (a longer one every 5), so a reader can
measure the unit from the ticks. unit = (S - 7) // max_value and at least 2 pixels: the largest
value is capped at (S - 7) // 2 (20 at 48 px) whatever the difficulty asks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from reasoner.data.synthetic.family import (
    BACKGROUND,
    INK,
    PALETTE,
    Family,
    Knobs,
    Question,
    near_numbers,
)

AXIS_X = 4
GRID: tuple[int, int, int] = (215, 215, 215)

Q_VALUE = "What is the value of the {a} bar?"
Q_SUM = "What is the sum of the {a} bar and the {b} bar?"
Q_DIFF = "What is the difference between the {a} bar and the {b} bar?"
Q_TALLEST = "Which bar is the tallest?"
Q_SHORTEST = "Which bar is the shortest?"
Q_SUM3 = "What is the sum of the {a} bar, the {b} bar and the {c} bar?"
Q_RANGE = "What is the difference between the tallest bar and the shortest bar?"
S_BAR = "The {a} bar is {x}."
S_ADD = "{x} + {y} = {z}."
S_ADD3 = "{x} + {y} + {w} = {z}."
S_SUB = "{x} - {y} = {z}."
S_TALLEST = "The tallest bar is the {a} bar."
S_SHORTEST = "The shortest bar is the {a} bar."
S_LARGEST = "The largest value is {x}."
S_SMALLEST = "The smallest value is {x}."
TEMPLATES = (
    Q_VALUE, Q_SUM, Q_DIFF, Q_TALLEST, Q_SHORTEST, Q_SUM3, Q_RANGE,
    S_BAR, S_ADD, S_ADD3, S_SUB, S_TALLEST, S_SHORTEST, S_LARGEST, S_SMALLEST,
)  # fmt: skip


@dataclass(frozen=True)
class ChartScene:
    size: int
    unit: int  # pixels per unit of value
    max_value: int
    bars: tuple[tuple[str, int], ...]  # (colour, value), left to right
    gridlines: bool  # light lines every 5 units


def max_value(knobs: Knobs, size: int) -> int:
    """The largest bar value at this difficulty and size (units stay at least 2 px)."""
    return min(knobs.chart_max_value, (size - 7) // 2)


def baseline(size: int) -> int:
    """Row of the x axis."""
    return size - 4


def bar_columns(size: int, count: int) -> list[tuple[int, int]]:
    """First and last pixel column of each of ``count`` bars, left to right."""
    left, right = AXIS_X + 2, size - 2
    slot = (right - left) // count
    gap = max(1, slot // 4)
    width = min(slot - gap, 10)
    start = left + (right - left - count * slot) // 2 + (slot - width) // 2
    return [(start + i * slot, start + i * slot + width - 1) for i in range(count)]


def sample(rng: random.Random, knobs: Knobs, size: int) -> ChartScene:
    top = max_value(knobs, size)
    count = rng.randint(*knobs.chart_bars)
    colours = rng.sample(sorted(PALETTE), count)
    bars = tuple((colour, rng.randint(1, top)) for colour in colours)
    return ChartScene(
        size=size,
        unit=(size - 7) // top,
        max_value=top,
        bars=bars,
        gridlines=rng.random() < knobs.difficulty,
    )


def render(scene: ChartScene) -> Image.Image:
    size, unit = scene.size, scene.unit
    base = baseline(size)
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if scene.gridlines:
        for k in range(5, scene.max_value + 1, 5):
            draw.line((AXIS_X + 1, base - k * unit, size - 2, base - k * unit), fill=GRID)
    for (colour, value), (x0, x1) in zip(scene.bars, bar_columns(size, len(scene.bars))):
        draw.rectangle((x0, base - value * unit, x1, base - 1), fill=PALETTE[colour])
    draw.line((AXIS_X, base - scene.max_value * unit - 1, AXIS_X, base), fill=INK)
    draw.line((AXIS_X, base, size - 2, base), fill=INK)
    ticks = [(AXIS_X - 1, base - k * unit) for k in range(1, scene.max_value + 1)]
    ticks += [(AXIS_X - 2, base - k * unit) for k in range(5, scene.max_value + 1, 5)]
    draw.point(ticks, fill=INK)
    return image


def _reads(bars: list[tuple[str, int]]) -> list[str]:
    return [S_BAR.format(a=colour, x=value) for colour, value in bars]


def ask(scene: ChartScene, rng: random.Random, knobs: Knobs) -> Question:
    bars = list(scene.bars)
    values = [v for _, v in bars]
    level = knobs.choose_level(rng)
    if level == 2:
        kind = rng.choice(("sum", "difference", "extreme"))
        top, bottom = max(values), min(values)
        if kind == "extreme" and values.count(top) == 1 and rng.random() < 0.5:
            colour = bars[values.index(top)][0]
            return _colour_question(Q_TALLEST, S_TALLEST, colour, bars)
        if kind == "extreme" and values.count(bottom) == 1:
            colour = bars[values.index(bottom)][0]
            return _colour_question(Q_SHORTEST, S_SHORTEST, colour, bars)
        (a, x), (b, y) = rng.sample(bars, 2)
        if kind == "sum":
            return Question(
                Q_SUM.format(a=a, b=b),
                _reads([(a, x), (b, y)]) + [S_ADD.format(x=x, y=y, z=x + y)],
                str(x + y),
                "relaxed",
                [str(abs(x - y)), str(x), str(y)],
            )
        big, small = max(x, y), min(x, y)
        return Question(
            Q_DIFF.format(a=a, b=b),
            _reads([(a, x), (b, y)]) + [S_SUB.format(x=big, y=small, z=big - small)],
            str(big - small),
            "relaxed",
            [str(x + y), str(big), str(small)],
        )
    if level == 3:
        if rng.random() < 0.5:
            (a, x), (b, y), (c, w) = rng.sample(bars, 3)
            total = x + y + w
            return Question(
                Q_SUM3.format(a=a, b=b, c=c),
                _reads([(a, x), (b, y), (c, w)]) + [S_ADD3.format(x=x, y=y, w=w, z=total)],
                str(total),
                "relaxed",
                [str(x + y), str(x + w), str(y + w), *near_numbers(total)],
            )
        top, bottom = max(values), min(values)
        steps = _reads(bars) + [
            S_LARGEST.format(x=top),
            S_SMALLEST.format(x=bottom),
            S_SUB.format(x=top, y=bottom, z=top - bottom),
        ]
        return Question(
            Q_RANGE, steps, str(top - bottom), "relaxed", [str(top), str(bottom), str(top + bottom)]
        )
    a, x = rng.choice(bars)
    others = [str(v) for c, v in bars if c != a]
    return Question(Q_VALUE.format(a=a), _reads([(a, x)]), str(x), "relaxed", others)


def _colour_question(
    text: str, step: str, colour: str, bars: list[tuple[str, int]]
) -> Question:
    shown = [c for c, _ in bars if c != colour]
    hidden = [c for c in sorted(PALETTE) if c != colour and c not in shown]
    return Question(
        text, _reads(bars) + [step.format(a=colour)], colour, "exact", shown + hidden
    )


def describe(scene: ChartScene) -> list[str]:
    """Every bar's value, left to right: ``["The red bar is 7.", ...]``."""
    return _reads(list(scene.bars))


def max_number(knobs: Knobs, size: int) -> int:
    return 3 * max_value(knobs, size)


FAMILY = Family(
    name="chart",
    sample=sample,
    render=render,
    ask=ask,
    describe=describe,
    max_number=max_number,
    templates=TEMPLATES,
    names=tuple(sorted(PALETTE)),
)
