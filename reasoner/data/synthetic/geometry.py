"""Geometry: a square, rectangle or triangle with side lengths written beside its sides.

Which shape appears follows the question level: squares need one value (area, perimeter),
rectangles and right triangles two (right triangles: area), other triangles three (perimeter).
Drawn sides grow with their labels where the shape allows, but only the labels count. Labels use
the bitmap font in ink, outlines and fills are palette colours, so text is separable by colour.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from reasoner.data.synthetic import font
from reasoner.data.synthetic.family import (
    BACKGROUND,
    INK,
    PALETTE,
    Family,
    Knobs,
    Question,
    tint,
)

KINDS_BY_LEVEL = {1: ("square",), 2: ("rectangle", "right_triangle"), 3: ("triangle",)}
OUTLINES = ("blue", "green", "purple", "red")
GAP = 2  # blank pixels (times the font scale) between a side and its label
_MAX_LAYOUT_DRAWS = 10_000

Q_AREA = "What is the area of the {shape}?"
Q_PERIMETER = "What is the perimeter of the {shape}?"
S_SIDE = "The side is {x}."
S_WIDTH = "The width is {x}."
S_HEIGHT = "The height is {x}."
S_BASE = "The base is {x}."
S_BOTTOM = "The bottom side is {x}."
S_LEFT = "The left side is {x}."
S_RIGHT = "The right side is {x}."
S_MUL = "{x} * {y} = {z}."
S_ADD = "{x} + {y} = {z}."
S_ADD3 = "{x} + {y} + {w} = {z}."
S_HALF = "{x} / 2 = {z}."
TEMPLATES = (
    Q_AREA, Q_PERIMETER, S_SIDE, S_WIDTH, S_HEIGHT, S_BASE, S_BOTTOM, S_LEFT, S_RIGHT,
    S_MUL, S_ADD, S_ADD3, S_HALF,
)  # fmt: skip
SHAPE_NAMES = ("square", "rectangle", "triangle")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive


@dataclass(frozen=True)
class GeometryScene:
    size: int
    kind: str  # square | rectangle | right_triangle | triangle
    values: tuple[int, ...]  # square (side,), rectangle (width, height),
    # right_triangle (base, height), triangle (bottom, left, right)
    points: tuple[tuple[int, int], ...]  # the corners
    labels: tuple[tuple[int, int], ...]  # top-left corner of each value's label
    colour: str


def font_scale(size: int) -> int:
    return max(1, size // 64)


def _pixels(value: int, top: int, lo: int, hi: int) -> int:
    """A drawn length in [lo, hi] growing with ``value`` in [2, top]."""
    return lo + (value - 2) * max(0, hi - lo) // max(1, top - 2)


def _inside(box: Box, size: int) -> bool:
    return box[0] >= 2 and box[1] >= 2 and box[2] <= size - 3 and box[3] <= size - 3


def _label_box(xy: tuple[int, int], value: int, scale: int) -> Box:
    x, y = xy
    return (x, y, x + font.text_width(str(value), scale) - 1, y + font.text_height(scale) - 1)


def _side_x(a: tuple[int, int], b: tuple[int, int], row: int) -> float:
    """x of the segment a-b at ``row``."""
    (xa, ya), (xb, yb) = a, b
    return xa + (xb - xa) * (row - ya) / (yb - ya)


def _values(rng: random.Random, kind: str, top: int) -> tuple[int, ...]:
    while True:
        if kind == "square":
            return (rng.randint(2, top),)
        a, b = rng.randint(2, top), rng.randint(2, top)
        if kind == "rectangle" and a != b:
            return (a, b)
        if kind == "right_triangle" and a * b % 2 == 0:
            return (a, b)
        if kind == "triangle":
            c = rng.randint(2, top)
            if a < b + c and b < a + c and c < a + b:
                return (a, b, c)


def _layout(rng: random.Random, kind: str, values: tuple[int, ...], top: int, size: int):
    """Corners and label positions, or None when this draw does not fit (the caller redraws)."""
    scale = font_scale(size)
    gap = GAP * scale
    widths = [font.text_width(str(v), scale) for v in values]
    high = font.text_height(scale)
    widest = font.text_width("00", scale)
    bottom_max = size - 3 - high - gap - 1  # lowest row a shape may use with a label below
    small = max(6, size // 6)
    if kind in ("square", "rectangle"):
        right_max = size - 3 - widest - gap - 1
        span_x, span_y = right_max - 3, bottom_max - 3
        if kind == "square":
            w = h = _pixels(values[0], top, small, min(span_x, span_y))
        else:
            w = _pixels(values[0], top, small, span_x)
            h = _pixels(values[1], top, small, span_y)
        x0, y0 = rng.randint(3, right_max - w), rng.randint(3, bottom_max - h)
        x1, y1 = x0 + w, y0 + h
        points = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
        labels = [((x0 + x1 + 1 - widths[0]) // 2, y1 + gap + 1)]
        if kind == "rectangle":
            labels.append((x1 + gap + 1, (y0 + y1 + 1 - high) // 2))
    elif kind == "right_triangle":
        left_min = 2 + widest + gap + 1
        w = _pixels(values[0], top, small, size - 3 - left_min)
        h = _pixels(values[1], top, small, bottom_max - 3)
        x0, y0 = rng.randint(left_min, size - 3 - w), rng.randint(3, bottom_max - h)
        x1, y1 = x0 + w, y0 + h
        points = ((x0, y1), (x1, y1), (x0, y0))
        labels = [
            ((x0 + x1 + 1 - widths[0]) // 2, y1 + gap + 1),
            (x0 - gap - widths[1], (y0 + y1 + 1 - high) // 2),
        ]
    else:
        x0, x1 = rng.randint(3, size // 3), rng.randint(2 * size // 3, size - 3)
        y0, y1 = rng.randint(3, size // 4), bottom_max - rng.randint(0, 2)
        apex = (rng.randint(x0 + (x1 - x0) // 3, x1 - (x1 - x0) // 3), y0)
        points = ((x0, y1), (x1, y1), apex)
        mid_row = (y0 + y1 + 1 - high) // 2
        # Slanted sides lean out as they go down: clear them at the label's lowest row.
        below = mid_row + high
        left_edge = math.floor(_side_x((x0, y1), apex, below)) - gap - 1
        right_edge = math.ceil(_side_x((x1, y1), apex, below)) + gap + 1
        labels = [
            ((x0 + x1 + 1 - widths[0]) // 2, y1 + gap + 1),
            (left_edge - widths[1] + 1, mid_row),
            (right_edge, mid_row),
        ]
    boxes = [_label_box(xy, v, scale) for xy, v in zip(labels, values)]
    if not all(_inside(box, size) for box in boxes):
        return None
    return points, tuple(labels)


def sample(rng: random.Random, knobs: Knobs, size: int) -> GeometryScene:
    kind = rng.choice(KINDS_BY_LEVEL[knobs.choose_level(rng)])
    top = knobs.geometry_max_value
    for _ in range(_MAX_LAYOUT_DRAWS):
        values = _values(rng, kind, top)
        layout = _layout(rng, kind, values, top, size)
        if layout is not None:
            return GeometryScene(size, kind, values, layout[0], layout[1], rng.choice(OUTLINES))
    raise RuntimeError(f"no {kind} layout fits {size} px in {_MAX_LAYOUT_DRAWS} draws")


def render(scene: GeometryScene) -> Image.Image:
    image = Image.new("RGB", (scene.size, scene.size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    colour = PALETTE[scene.colour]
    draw.polygon(scene.points, fill=tint(colour, 0.8), outline=colour)
    scale = font_scale(scene.size)
    if scene.kind == "right_triangle":
        (x0, y1), mark = scene.points[0], 3 * scale
        draw.line(((x0 + mark, y1), (x0 + mark, y1 - mark), (x0, y1 - mark)), fill=colour)
    for xy, value in zip(scene.labels, scene.values):
        font.draw_text(draw, xy, str(value), INK, scale)
    return image


# The step that reads each of a kind's values, in the order of ``GeometryScene.values``.
_READS = {
    "square": (S_SIDE,),
    "rectangle": (S_WIDTH, S_HEIGHT),
    "right_triangle": (S_BASE, S_HEIGHT),
    "triangle": (S_BOTTOM, S_LEFT, S_RIGHT),
}


def describe(scene: GeometryScene) -> list[str]:
    """Every labelled value of the shape: ``["The width is 7.", "The height is 3."]``."""
    return [read.format(x=value) for read, value in zip(_READS[scene.kind], scene.values)]


def ask(scene: GeometryScene, rng: random.Random, knobs: Knobs) -> Question:
    reads = describe(scene)
    if scene.kind == "square":
        (a,) = scene.values
        if rng.random() < 0.5:
            steps = reads + [S_MUL.format(x=a, y=a, z=a * a)]
            return Question(Q_AREA.format(shape="square"), steps, str(a * a), "exact",
                            [str(4 * a), str(2 * a), str(a)])  # fmt: skip
        steps = reads + [S_MUL.format(x=4, y=a, z=4 * a)]
        return Question(Q_PERIMETER.format(shape="square"), steps, str(4 * a), "exact",
                        [str(a * a), str(2 * a), str(a)])  # fmt: skip
    if scene.kind == "rectangle":
        w, h = scene.values
        if rng.random() < 0.5:
            return Question(Q_AREA.format(shape="rectangle"),
                            reads + [S_MUL.format(x=w, y=h, z=w * h)], str(w * h), "exact",
                            [str(2 * (w + h)), str(w + h), str(w * h // 2)])  # fmt: skip
        steps = reads + [S_ADD.format(x=w, y=h, z=w + h), S_MUL.format(x=2, y=w + h, z=2 * (w + h))]
        return Question(Q_PERIMETER.format(shape="rectangle"), steps, str(2 * (w + h)), "exact",
                        [str(w * h), str(w + h), str(2 * w + h), str(w + 2 * h)])  # fmt: skip
    if scene.kind == "right_triangle":
        b, h = scene.values
        steps = reads + [S_MUL.format(x=b, y=h, z=b * h), S_HALF.format(x=b * h, z=b * h // 2)]
        return Question(Q_AREA.format(shape="triangle"), steps, str(b * h // 2), "exact",
                        [str(b * h), str(b + h), str(2 * (b + h))])  # fmt: skip
    a, b, c = scene.values
    steps = reads + [S_ADD3.format(x=a, y=b, w=c, z=a + b + c)]
    return Question(Q_PERIMETER.format(shape="triangle"), steps, str(a + b + c), "exact",
                    [str(a + b), str(a + c), str(b + c)])  # fmt: skip


def max_number(knobs: Knobs, size: int) -> int:
    top = knobs.geometry_max_value
    return max(top * top, 4 * top)


FAMILY = Family(
    name="geometry",
    sample=sample,
    render=render,
    ask=ask,
    describe=describe,
    max_number=max_number,
    templates=TEMPLATES,
    names=SHAPE_NAMES,
)
