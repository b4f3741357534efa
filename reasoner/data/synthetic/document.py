"""Documents: a receipt-like form of lettered fields ("A 12", "B 7"); read and add fields.

The paper is a white card with a grey border, grey scribbles for a title and a dotted rule under
it; each field is a line with its letter on the left and its value right-aligned, joined by a
grey dotted leader at higher difficulty. Only the letters and values are ink.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from reasoner.data.synthetic import font
from reasoner.data.synthetic.family import INK, Family, Knobs, Question, near_numbers

FIELD_LETTERS = ("A", "B", "C", "D", "E", "F", "G", "H")
DESK: tuple[int, int, int] = (222, 214, 196)
PAPER: tuple[int, int, int] = (252, 252, 250)
GREY: tuple[int, int, int] = (165, 165, 165)
LINE_GAP = 2  # blank rows between two field lines

Q_READ = "What is the value of field {f}?"
Q_ADD = "What is field {f} plus field {g}?"
Q_SUB = "What is field {f} minus field {g}?"
Q_ADD3 = "What is field {f} plus field {g} plus field {h}?"
Q_TOTAL = "What is the total of all fields?"
S_FIELD = "Field {f} is {x}."
S_ADD = "{x} + {y} = {z}."
S_ADD3 = "{x} + {y} + {w} = {z}."
S_SUB = "{x} - {y} = {z}."
S_TOTAL = "{sum} = {z}."  # "{x} + {y} + ... = {z}." over every field
TEMPLATES = (Q_READ, Q_ADD, Q_SUB, Q_ADD3, Q_TOTAL, S_FIELD, S_ADD, S_ADD3, S_SUB, S_TOTAL, "+")


@dataclass(frozen=True)
class DocumentScene:
    size: int
    fields: tuple[tuple[str, int], ...]  # (letter, value), top to bottom
    top: int  # first row of the first field line
    title: tuple[int, ...]  # lengths of the grey title scribbles
    leaders: bool  # dotted leaders between letters and values


def font_scale(size: int) -> int:
    return max(1, size // 64)


def sample(rng: random.Random, knobs: Knobs, size: int) -> DocumentScene:
    scale = font_scale(size)
    line = font.text_height(scale) + LINE_GAP * scale
    count = rng.randint(*knobs.document_fields)
    # At most as many lines as fit under the title (rows 4-7) and above the paper's border.
    count = min(count, (size - 4 - 9 + LINE_GAP * scale) // line)
    if rng.random() < knobs.difficulty:
        letters = sorted(rng.sample(FIELD_LETTERS, count))
    else:
        letters = list(FIELD_LETTERS[:count])
    fields = tuple((f, rng.randint(1, knobs.document_max_value)) for f in letters)
    lowest = size - 4 - (count * line - LINE_GAP * scale)
    title = tuple(rng.randint(3, (size - 10) // 2) for _ in range(rng.randint(1, 2)))
    return DocumentScene(
        size=size,
        fields=fields,
        top=rng.randint(10, max(10, lowest)),
        title=title,
        leaders=rng.random() < knobs.difficulty,
    )


def render(scene: DocumentScene) -> Image.Image:
    size, scale = scene.size, font_scale(scene.size)
    image = Image.new("RGB", (size, size), DESK)
    draw = ImageDraw.Draw(image)
    draw.rectangle((1, 1, size - 2, size - 2), fill=PAPER, outline=GREY)
    x = 5
    for length in scene.title:
        draw.line((x, 4, x + length - 1, 4), fill=GREY)
        draw.line((x, 5, x + length - 1, 5), fill=GREY)
        x += length + 2
    draw.point([(x, 7) for x in range(4, size - 4, 2)], fill=GREY)
    line = font.text_height(scale) + LINE_GAP * scale
    for i, (letter, value) in enumerate(scene.fields):
        y = scene.top + i * line
        text = str(value)
        right = size - 4 * scale - font.text_width(text, scale)
        font.draw_text(draw, (4 * scale, y), letter, INK, scale)
        font.draw_text(draw, (right, y), text, INK, scale)
        if scene.leaders:
            row = y + font.text_height(scale) - 1
            start = 4 * scale + font.text_width(letter, scale) + 2 * scale
            draw.point([(x, row) for x in range(start, right - 2 * scale, 2 * scale)], fill=GREY)
    return image


def ask(scene: DocumentScene, rng: random.Random, knobs: Knobs) -> Question:
    fields = list(scene.fields)
    values = [v for _, v in fields]
    total = sum(values)
    level = knobs.choose_level(rng)
    if level == 3:
        if len(fields) >= 3 and rng.random() < 0.5:
            (f, x), (g, y), (h, w) = rng.sample(fields, 3)
            steps = [S_FIELD.format(f=f, x=x), S_FIELD.format(f=g, x=y), S_FIELD.format(f=h, x=w)]
            return Question(
                Q_ADD3.format(f=f, g=g, h=h),
                steps + [S_ADD3.format(x=x, y=y, w=w, z=x + y + w)],
                str(x + y + w),
                "exact",
                [str(x + y), str(x + w), str(y + w), str(total), *near_numbers(x + y + w)],
            )
        steps = [S_FIELD.format(f=f, x=v) for f, v in fields]
        steps.append(S_TOTAL.format(sum=" + ".join(map(str, values)), z=total))
        partial = [str(total - v) for v in values]
        return Question(Q_TOTAL, steps, str(total), "exact", [*partial, *near_numbers(total)])
    if level == 2:
        (f, x), (g, y) = rng.sample(fields, 2)
        reads = [S_FIELD.format(f=f, x=x), S_FIELD.format(f=g, x=y)]
        if rng.random() < 0.5:
            return Question(
                Q_ADD.format(f=f, g=g),
                reads + [S_ADD.format(x=x, y=y, z=x + y)],
                str(x + y),
                "exact",
                [str(abs(x - y)), str(x), str(y), *near_numbers(x + y)],
            )
        if x < y:
            (f, x), (g, y) = (g, y), (f, x)
            reads.reverse()
        return Question(
            Q_SUB.format(f=f, g=g),
            reads + [S_SUB.format(x=x, y=y, z=x - y)],
            str(x - y),
            "exact",
            [str(x + y), str(x), str(y)],
        )
    f, x = rng.choice(fields)
    others = [str(v) for g, v in fields if g != f]
    return Question(Q_READ.format(f=f), [S_FIELD.format(f=f, x=x)], str(x), "exact", others)


def describe(scene: DocumentScene) -> list[str]:
    """Every field's value, top to bottom: ``["Field A is 12.", ...]``."""
    return [S_FIELD.format(f=f, x=x) for f, x in scene.fields]


def max_number(knobs: Knobs, size: int) -> int:
    return knobs.document_fields[1] * knobs.document_max_value


FAMILY = Family(
    name="document",
    sample=sample,
    render=render,
    ask=ask,
    describe=describe,
    max_number=max_number,
    templates=TEMPLATES,
    names=FIELD_LETTERS,
)
