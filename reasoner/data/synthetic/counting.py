"""Counting scenes: coloured circles, squares and triangles among grey specks; count and combine.

Shapes are ``shape_size`` = max(5, 7 S // 48) pixels (7 at 48 px: 25 cells), one to a cell of a
grid with cells 2 pixels larger, jittered by a pixel inside it so neighbours always keep a blank
pixel between them: every shape is its own connected blob. Specks are single grey pixels, never
a palette colour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial

from PIL import Image, ImageDraw

from reasoner.data.synthetic.family import BACKGROUND, PALETTE, Family, Knobs, Question

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
PLURAL = {shape: shape + "s" for shape in SHAPES}  # templates take the plural
SPECK: tuple[int, int, int] = (150, 150, 150)

Q_COLOUR = "How many {a} shapes are there?"
Q_SHAPE = "How many {s} are there?"
Q_BOTH = "How many {a} {s} are there?"
Q_SUM = "How many {a} shapes and {b} shapes are there in total?"
Q_MORE_COLOUR = "How many more {a} shapes than {b} shapes are there?"
Q_MORE_SHAPE = "How many more {s} than {t} are there?"
Q_SUM3 = "How many {a} shapes, {b} shapes and {c} shapes are there in total?"
Q_TOTAL = "How many shapes are there in total?"
S_COLOUR = "The number of {a} shapes is {n}."
S_SHAPE = "The number of {s} is {n}."
S_BOTH = "The number of {a} {s} is {n}."
S_ADD = "{x} + {y} = {z}."
S_ADD3 = "{x} + {y} + {w} = {z}."
S_SUB = "{x} - {y} = {z}."
TEMPLATES = (
    Q_COLOUR, Q_SHAPE, Q_BOTH, Q_SUM, Q_MORE_COLOUR, Q_MORE_SHAPE, Q_SUM3, Q_TOTAL,
    S_COLOUR, S_SHAPE, S_BOTH, S_ADD, S_ADD3, S_SUB,
)  # fmt: skip


@dataclass(frozen=True)
class CountingScene:
    size: int
    shape_size: int
    colours: tuple[str, ...]  # the colours a question may ask about
    shapes: tuple[str, ...]  # the shapes a question may ask about
    objects: tuple[tuple[int, int, str, str], ...]  # (x, y, colour, shape), sorted
    specks: tuple[tuple[int, int], ...]  # sorted


def grid(size: int) -> tuple[int, int, int, int]:
    """(shape size, cell size, cells a side, margin) for an image of ``size`` pixels."""
    shape = max(5, size * 7 // 48)
    cell = shape + 2
    side = (size - 2) // cell
    return shape, cell, side, (size - side * cell) // 2


def sample(rng: random.Random, knobs: Knobs, size: int) -> CountingScene:
    shape, cell, side, margin = grid(size)
    colours = tuple(rng.sample(COLOURS, knobs.count_colours))
    shapes = tuple(rng.sample(SHAPES, knobs.count_shapes))
    low, high = knobs.count_objects
    count = rng.randint(min(low, side * side), min(high, side * side))
    objects = []
    for index in rng.sample(range(side * side), count):
        row, col = divmod(index, side)
        x = margin + col * cell + rng.randint(0, cell - shape - 1)
        y = margin + row * cell + rng.randint(0, cell - shape - 1)
        objects.append((x, y, rng.choice(colours), rng.choice(shapes)))
    specks = set()
    for _ in range(knobs.count_specks):
        x, y = rng.randint(1, size - 2), rng.randint(1, size - 2)
        if all(not (ox - 1 <= x <= ox + shape and oy - 1 <= y <= oy + shape)
               for ox, oy, _, _ in objects):  # fmt: skip
            specks.add((x, y))
    return CountingScene(
        size=size,
        shape_size=shape,
        colours=colours,
        shapes=shapes,
        objects=tuple(sorted(objects)),
        specks=tuple(sorted(specks)),
    )


def render(scene: CountingScene) -> Image.Image:
    image = Image.new("RGB", (scene.size, scene.size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    last = scene.shape_size - 1
    for x, y, colour, shape in scene.objects:
        fill = PALETTE[colour]
        if shape == "circle":
            draw.ellipse((x, y, x + last, y + last), fill=fill)
        elif shape == "square":
            draw.rectangle((x, y, x + last, y + last), fill=fill)
        else:
            draw.polygon(((x, y + last), (x + last, y + last), (x + last / 2, y)), fill=fill)
    if scene.specks:
        draw.point(list(scene.specks), fill=SPECK)
    return image


def colour_count(scene: CountingScene, colour: str) -> int:
    return sum(1 for o in scene.objects if o[2] == colour)


def shape_count(scene: CountingScene, shape: str) -> int:
    return sum(1 for o in scene.objects if o[3] == shape)


def ask(scene: CountingScene, rng: random.Random, knobs: Knobs) -> Question:
    by_colour, by_shape = partial(colour_count, scene), partial(shape_count, scene)
    level = knobs.choose_level(rng)
    total = len(scene.objects)
    if level == 3 and len(scene.colours) >= 3 and rng.random() < 0.5:
        a, b, c = rng.sample(scene.colours, 3)
        x, y, w = by_colour(a), by_colour(b), by_colour(c)
        steps = [S_COLOUR.format(a=a, n=x), S_COLOUR.format(a=b, n=y), S_COLOUR.format(a=c, n=w)]
        return Question(
            Q_SUM3.format(a=a, b=b, c=c),
            steps + [S_ADD3.format(x=x, y=y, w=w, z=x + y + w)],
            str(x + y + w),
            "exact",
            [str(x + y), str(x + w), str(y + w), str(total)],
        )
    if level == 3:
        counts = [(s, by_shape(s)) for s in SHAPES if s in scene.shapes]
        steps = [S_SHAPE.format(s=PLURAL[s], n=n) for s, n in counts]
        numbers = [n for _, n in counts]
        add = S_ADD if len(numbers) == 2 else S_ADD3  # two or three shapes are in play
        steps.append(add.format(x=numbers[0], y=numbers[1], w=numbers[-1], z=total))
        return Question(Q_TOTAL, steps, str(total), "exact", [str(n) for n in numbers])
    if level == 2:
        if rng.random() < 0.5:
            a, b = rng.sample(scene.colours, 2)
            x, y = by_colour(a), by_colour(b)
            reads = [S_COLOUR.format(a=a, n=x), S_COLOUR.format(a=b, n=y)]
            if rng.random() < 0.5:
                return Question(
                    Q_SUM.format(a=a, b=b),
                    reads + [S_ADD.format(x=x, y=y, z=x + y)],
                    str(x + y),
                    "exact",
                    [str(abs(x - y)), str(x), str(y), str(total)],
                )
            if x < y:
                a, b, x, y = b, a, y, x
                reads.reverse()
            return Question(
                Q_MORE_COLOUR.format(a=a, b=b),
                reads + [S_SUB.format(x=x, y=y, z=x - y)],
                str(x - y),
                "exact",
                [str(x + y), str(x), str(y)],
            )
        s, t = rng.sample(scene.shapes, 2)
        x, y = by_shape(s), by_shape(t)
        if x < y:
            s, t, x, y = t, s, y, x
        return Question(
            Q_MORE_SHAPE.format(s=PLURAL[s], t=PLURAL[t]),
            [
                S_SHAPE.format(s=PLURAL[s], n=x),
                S_SHAPE.format(s=PLURAL[t], n=y),
                S_SUB.format(x=x, y=y, z=x - y),
            ],
            str(x - y),
            "exact",
            [str(x + y), str(x), str(y)],
        )
    kind = rng.choice(("colour", "shape", "both"))
    a, s = rng.choice(scene.colours), rng.choice(scene.shapes)
    if kind == "colour":
        n = by_colour(a)
        return Question(
            Q_COLOUR.format(a=a), [S_COLOUR.format(a=a, n=n)], str(n), "exact", [str(by_shape(s))]
        )
    if kind == "shape":
        n = by_shape(s)
        steps = [S_SHAPE.format(s=PLURAL[s], n=n)]
        return Question(Q_SHAPE.format(s=PLURAL[s]), steps, str(n), "exact", [str(by_colour(a))])
    n = sum(1 for o in scene.objects if o[2] == a and o[3] == s)
    return Question(
        Q_BOTH.format(a=a, s=PLURAL[s]),
        [S_BOTH.format(a=a, s=PLURAL[s], n=n)],
        str(n),
        "exact",
        [str(by_colour(a)), str(by_shape(s))],
    )


def describe(scene: CountingScene) -> list[str]:
    """The count of each colour, then of each shape, that the scene's questions may ask about."""
    counts = [S_COLOUR.format(a=a, n=colour_count(scene, a)) for a in scene.colours]
    return counts + [S_SHAPE.format(s=PLURAL[s], n=shape_count(scene, s)) for s in SHAPES if s in scene.shapes]


def max_number(knobs: Knobs, size: int) -> int:
    side = grid(size)[2]
    return min(knobs.count_objects[1], side * side)


FAMILY = Family(
    name="counting",
    sample=sample,
    render=render,
    ask=ask,
    describe=describe,
    max_number=max_number,
    templates=TEMPLATES,
    names=COLOURS + tuple(PLURAL.values()),
)
