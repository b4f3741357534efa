"""Legibility of the synthetic suite: real decoders read every family back from the pixels.

Bar heights are measured against the chart's axis ticks, shapes counted as connected components
per colour, and numbers and letters recovered by exact template matching against the bitmap
font's glyph table. Each decoded image then answers its own question, and that answer must be the
item's. The suite's other properties (determinism, splits, rationales, text, configuration) are
tested in test_synthetic.py.
"""

from __future__ import annotations

import io
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageDraw

from reasoner.data.synthetic import (
    GLYPH_HEIGHT,
    GLYPH_SPACING,
    GLYPH_WIDTH,
    GLYPHS,
    SuiteConfig,
    generate_suite,
)
from reasoner.data.synthetic.family import LETTERS, PALETTE
from reasoner.data.synthetic.font import draw_text


def _by_family(items: list[dict], family: str) -> list[dict]:
    return [item for item in items if item["source"] == f"synthetic/{family}"]


# --------------------------------------------------------------------------- decoders


def _pixels(item: dict) -> np.ndarray:
    image = Image.open(io.BytesIO(item["image"]))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _ink(px: np.ndarray) -> np.ndarray:
    return px.max(axis=2) < 100


def _classify(px: np.ndarray, names: list[str], within: float = 60.0) -> np.ndarray:
    """Per pixel: index of the nearest of ``names``' palette colours, or -1 if none is near."""
    ref = np.array([PALETTE[n] for n in names], dtype=np.float64)
    dist = np.linalg.norm(px[:, :, None, :].astype(np.float64) - ref[None, None], axis=3)
    labels = dist.argmin(axis=2)
    labels[dist.min(axis=2) > within] = -1
    return labels


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components of a boolean mask, as lists of (row, col)."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    out = []
    for r0, c0 in zip(*np.nonzero(mask)):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        stack, comp = [(r0, c0)], []
        while stack:
            r, c = stack.pop()
            comp.append((int(r), int(c)))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < height and 0 <= cc < width and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
        out.append(comp)
    return out


_GLYPH_OF = {rows: char for char, rows in GLYPHS.items()}


def _read_text(px: np.ndarray) -> list[tuple[int, int, str]]:
    """Words of ink as (top row, left column, text): glyphs matched exactly, then joined."""
    ink = _ink(px)
    glyphs = []
    for comp in _components(ink):
        rows = [r for r, _ in comp]
        cols = [c for _, c in comp]
        top, left = min(rows), min(cols)
        assert (max(rows) - top + 1, max(cols) - left + 1) == (GLYPH_HEIGHT, GLYPH_WIDTH), (
            f"ink blob at {(top, left)} is not a {GLYPH_WIDTH}x{GLYPH_HEIGHT} glyph"
        )
        window = ink[top : top + GLYPH_HEIGHT, left : left + GLYPH_WIDTH]
        key = tuple(tuple(int(v) for v in row) for row in window)
        assert key in _GLYPH_OF, f"ink blob at {(top, left)} matches no glyph"
        glyphs.append((top, left, _GLYPH_OF[key]))
    words: list[list] = []
    for top, left, char in sorted(glyphs):
        last = words[-1] if words else None
        if last and last[0] == top and left == last[2] + GLYPH_WIDTH + GLYPH_SPACING:
            last[2], last[3] = left, last[3] + char
        else:
            words.append([top, left, left, char])
    return [(top, left, text) for top, left, _, text in words]


def decode_chart(px: np.ndarray) -> dict[str, int]:
    """Colour -> value: bar height over the unit measured between the y axis' ticks."""
    ink = _ink(px)
    base = int(ink.sum(axis=1).argmax())  # the x axis: the longest ink row
    axis = int(ink.sum(axis=0).argmax())  # the y axis: the longest ink column
    ticks = [r for r in range(base) if ink[r, axis - 1]]
    gaps = set(np.diff([*ticks, base]).tolist())
    assert len(gaps) == 1, f"ticks are not evenly spaced: {ticks}"
    unit = gaps.pop()
    assert unit >= 2
    names = sorted(PALETTE)
    labels = _classify(px, names)
    values = {}
    for index, name in enumerate(names):
        rows = np.nonzero((labels == index).sum(axis=1) >= 2)[0]
        if rows.size:
            height = base - int(rows.min())
            assert height % unit == 0, f"{name} bar of {height} px is not whole units of {unit}"
            assert int(rows.max()) == base - 1, f"{name} bar does not stand on the axis"
            values[name] = height // unit
    return values


def decode_counting(px: np.ndarray) -> list[tuple[str, str]]:
    """(colour, shape) of every shape: components per colour, shape from its rows' widths."""
    from reasoner.data.synthetic.counting import COLOURS

    names = list(COLOURS)
    labels = _classify(px, names)
    found = []
    for index, name in enumerate(names):
        for comp in _components(labels == index):
            assert len(comp) >= 5, f"a {name} blob of {len(comp)} px is too small to see"
            rows = Counter(r for r, _ in comp)
            top, bottom = min(rows), max(rows)
            width = max(c for _, c in comp) - min(c for _, c in comp) + 1
            if len(comp) == width * (bottom - top + 1):
                shape = "square"
            elif rows[top] <= 2 and rows[bottom] == width:
                shape = "triangle"
            else:
                assert rows[top] == rows[bottom] < width, f"unknown {name} shape"
                shape = "circle"
            found.append((name, shape))
    return found


def decode_geometry(px: np.ndarray) -> list[tuple[int, int, int]]:
    """The numbers written in the image, as (top row, left column, value)."""
    return [(top, left, int(text)) for top, left, text in _read_text(px)]


def decode_document(px: np.ndarray) -> dict[str, int]:
    """Field letter -> value, one field a line: a letter on the left, a number on the right."""
    lines: dict[int, list[tuple[int, str]]] = {}
    for top, left, text in _read_text(px):
        lines.setdefault(top, []).append((left, text))
    fields = {}
    for words in lines.values():
        (_, letter), (_, number) = sorted(words)
        assert letter.isalpha() and number.isdigit()
        fields[letter] = int(number)
    return fields


# --------------------------------------------------------------------------- answers from pixels


def chart_answer(question: str, bars: dict[str, int]) -> str:
    if question == "What is the difference between the tallest bar and the shortest bar?":
        return str(max(bars.values()) - min(bars.values()))
    if question in ("Which bar is the tallest?", "Which bar is the shortest?"):
        pick = max if "tallest" in question else min
        best = pick(bars.values())
        (colour,) = [c for c, v in bars.items() if v == best]
        return colour
    if m := re.fullmatch(r"What is the value of the (\w+) bar\?", question):
        return str(bars[m[1]])
    if m := re.fullmatch(r"What is the sum of the (\w+) bar and the (\w+) bar\?", question):
        return str(bars[m[1]] + bars[m[2]])
    if m := re.fullmatch(r"What is the difference between the (\w+) bar and the (\w+) bar\?",
                         question):  # fmt: skip
        return str(abs(bars[m[1]] - bars[m[2]]))
    m = re.fullmatch(r"What is the sum of the (\w+) bar, the (\w+) bar and the (\w+) bar\?",
                     question)  # fmt: skip
    assert m, f"unknown chart question {question!r}"
    return str(bars[m[1]] + bars[m[2]] + bars[m[3]])


def counting_answer(question: str, shapes: list[tuple[str, str]]) -> str:
    def count(colour: str | None = None, shape: str | None = None) -> int:
        return sum(1 for c, s in shapes if colour in (None, c) and shape in (None, s))

    if question == "How many shapes are there in total?":
        return str(len(shapes))
    three = r"How many (\w+) shapes, (\w+) shapes and (\w+) shapes are there in total\?"
    if m := re.fullmatch(three, question):
        return str(count(m[1]) + count(m[2]) + count(m[3]))
    if m := re.fullmatch(r"How many (\w+) shapes and (\w+) shapes are there in total\?", question):
        return str(count(m[1]) + count(m[2]))
    if m := re.fullmatch(r"How many more (\w+) shapes than (\w+) shapes are there\?", question):
        return str(count(m[1]) - count(m[2]))
    if m := re.fullmatch(r"How many more (\w+)s than (\w+)s are there\?", question):
        return str(count(shape=m[1]) - count(shape=m[2]))
    if m := re.fullmatch(r"How many (\w+) shapes are there\?", question):
        return str(count(m[1]))
    if m := re.fullmatch(r"How many (\w+) (\w+)s are there\?", question):
        return str(count(m[1], m[2]))
    m = re.fullmatch(r"How many (\w+)s are there\?", question)
    assert m, f"unknown counting question {question!r}"
    return str(count(shape=m[1]))


def geometry_answer(question: str, labels: list[tuple[int, int, int]]) -> str:
    """Labels by place: the lowest is the bottom side; of the others, left before right."""
    bottom, *others = sorted(labels, key=lambda label: (-label[0], label[1]))
    others.sort(key=lambda label: label[1])
    sides = [bottom[2]] + [value for _, _, value in others]
    m = re.fullmatch(r"What is the (area|perimeter) of the (square|rectangle|triangle)\?", question)
    assert m, f"unknown geometry question {question!r}"
    quantity, shape = m[1], m[2]
    if shape == "square":
        (a,) = sides
        return str(a * a if quantity == "area" else 4 * a)
    if shape == "rectangle":
        w, h = sides
        return str(w * h if quantity == "area" else 2 * (w + h))
    if quantity == "area":
        b, h = sides
        return str(b * h // 2)
    return str(sum(sides))


def document_answer(question: str, fields: dict[str, int]) -> str:
    if question == "What is the total of all fields?":
        return str(sum(fields.values()))
    if m := re.fullmatch(r"What is field (\w) plus field (\w) plus field (\w)\?", question):
        return str(fields[m[1]] + fields[m[2]] + fields[m[3]])
    if m := re.fullmatch(r"What is field (\w) plus field (\w)\?", question):
        return str(fields[m[1]] + fields[m[2]])
    if m := re.fullmatch(r"What is field (\w) minus field (\w)\?", question):
        return str(fields[m[1]] - fields[m[2]])
    m = re.fullmatch(r"What is the value of field (\w)\?", question)
    assert m, f"unknown document question {question!r}"
    return str(fields[m[1]])


def _final(item: dict) -> str:
    """The item's answer as a value: the option's text for multiple choice."""
    if item["metric"] == "mc":
        return item["choices"][LETTERS.index(item["answers"][0])]
    return item["answers"][0]


# --------------------------------------------------------------------------- legibility

_SIZES = [(48, 0.5), (48, 0.0), (48, 1.0), (40, 1.0), (64, 1.0)]


@pytest.fixture(scope="module", params=_SIZES, ids=[f"{s}px-d{d}" for s, d in _SIZES])
def sized_suite(request) -> list[dict]:
    size, difficulty = request.param
    return generate_suite(SuiteConfig(num_items=240, image_size=size, difficulty=difficulty))


def test_chart_bars_read_back_from_pixels(sized_suite):
    items = _by_family(sized_suite, "chart")
    assert len(items) >= 50
    for item in items:
        bars = decode_chart(_pixels(item))
        reads = dict(re.findall(r"^The (\w+) bar is (\d+)\.$", item["rationale"], re.M))
        assert reads, item["rationale"]
        assert {c: int(v) for c, v in reads.items()}.items() <= bars.items(), item["id"]
        assert chart_answer(item["question"], bars) == _final(item), item["id"]


def test_counting_shapes_counted_from_pixels(sized_suite):
    items = _by_family(sized_suite, "counting")
    assert len(items) >= 50
    for item in items:
        shapes = decode_counting(_pixels(item))
        for line in item["rationale"].splitlines():
            if m := re.fullmatch(r"The number of (\w+) shapes is (\d+)\.", line):
                assert sum(1 for c, _ in shapes if c == m[1]) == int(m[2]), item["id"]
            elif m := re.fullmatch(r"The number of (\w+) (\w+)s is (\d+)\.", line):
                assert shapes.count((m[1], m[2])) == int(m[3]), item["id"]
            elif m := re.fullmatch(r"The number of (\w+)s is (\d+)\.", line):
                assert sum(1 for _, s in shapes if s == m[1]) == int(m[2]), item["id"]
        assert counting_answer(item["question"], shapes) == _final(item), item["id"]


def test_geometry_labels_read_back_with_the_font(sized_suite):
    items = _by_family(sized_suite, "geometry")
    assert len(items) >= 50
    for item in items:
        labels = decode_geometry(_pixels(item))
        reads = re.findall(r"^The [\w ]+ is (\d+)\.$", item["rationale"], re.M)
        assert sorted(int(v) for v in reads) == sorted(v for _, _, v in labels), item["id"]
        assert geometry_answer(item["question"], labels) == _final(item), item["id"]


def test_document_fields_read_back_with_the_font(sized_suite):
    items = _by_family(sized_suite, "document")
    assert len(items) >= 50
    for item in items:
        fields = decode_document(_pixels(item))
        assert 2 <= len(fields) <= 5
        reads = dict(re.findall(r"^Field (\w) is (\d+)\.$", item["rationale"], re.M))
        assert {f: int(v) for f, v in reads.items()}.items() <= fields.items(), item["id"]
        assert document_answer(item["question"], fields) == _final(item), item["id"]


def test_images_are_square_pngs_of_the_configured_size():
    for size in (40, 48, 64):
        for item in generate_suite(SuiteConfig(num_items=8, image_size=size)):
            image = Image.open(io.BytesIO(item["image"]))
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (size, size))


# --------------------------------------------------------------------------- font


def test_font_glyphs_are_distinct_full_and_connected():
    assert set("0123456789ABCDEFGH") <= set(GLYPHS)
    assert len(set(GLYPHS.values())) == len(GLYPHS)
    for char, rows in GLYPHS.items():
        grid = np.array(rows, dtype=bool)
        assert grid.shape == (GLYPH_HEIGHT, GLYPH_WIDTH), char
        assert grid[0].any() and grid[-1].any() and grid[:, 0].any() and grid[:, -1].any(), char
        assert len(_components(grid)) == 1, char


def test_draw_text_renders_glyphs_and_rejects_unknown_characters():
    image = Image.new("RGB", (20, 9), (255, 255, 255))
    draw_text(ImageDraw.Draw(image), (2, 2), "A407", (0, 0, 0))
    px = np.asarray(image, dtype=np.int16)
    assert _read_text(px) == [(2, 2, "A407")]
    with pytest.raises(ValueError, match="'x'"):
        draw_text(ImageDraw.Draw(image), (0, 0), "1x", (0, 0, 0))


def test_difficulty_makes_items_harder():
    def profile(difficulty: float) -> tuple[float, float, float]:
        items = generate_suite(SuiteConfig(num_items=400, difficulty=difficulty))
        steps = np.mean([len(i["rationale"].splitlines()) for i in items])
        bars = np.mean([len(decode_chart(_pixels(i))) for i in _by_family(items, "chart")])
        biggest = max(int(t) for i in items for t in re.findall(r"\d+", i["rationale"]))
        return steps, bars, biggest

    easy, hard = profile(0.1), profile(0.9)
    assert all(h > e for e, h in zip(easy, hard)), (easy, hard)


def test_captions_read_every_value_the_pixels_show(sized_suite):
    """A caption is the whole reading of its image: every bar, field and label, every count."""
    for item in _by_family(sized_suite, "chart"):
        reads = re.findall(r"^The (\w+) bar is (\d+)\.$", item["caption"], re.M)
        assert len(reads) == len(item["caption"].splitlines())
        assert {c: int(v) for c, v in reads} == decode_chart(_pixels(item)), item["id"]
    for item in _by_family(sized_suite, "document"):
        reads = re.findall(r"^Field (\w) is (\d+)\.$", item["caption"], re.M)
        assert len(reads) == len(item["caption"].splitlines())
        assert {f: int(v) for f, v in reads} == decode_document(_pixels(item)), item["id"]
    for item in _by_family(sized_suite, "geometry"):
        reads = re.findall(r"^The [\w ]+ is (\d+)\.$", item["caption"], re.M)
        assert len(reads) == len(item["caption"].splitlines())
        assert sorted(int(v) for v in reads) == sorted(v for _, _, v in decode_geometry(_pixels(item)))
        assert set(item["caption"].splitlines()) <= set(item["rationale"].splitlines())  # reads every value
    for item in _by_family(sized_suite, "counting"):
        shapes = decode_counting(_pixels(item))
        colours = re.findall(r"^The number of (\w+) shapes is (\d+)\.$", item["caption"], re.M)
        kinds = re.findall(r"^The number of (\w+)s is (\d+)\.$", item["caption"], re.M)
        assert len(colours) + len(kinds) == len(item["caption"].splitlines())
        for colour, n in colours:
            assert sum(1 for c, _ in shapes if c == colour) == int(n), item["id"]
        for kind, n in kinds:
            assert sum(1 for _, s in shapes if s == kind) == int(n), item["id"]
        assert sum(int(n) for _, n in colours) == sum(int(n) for _, n in kinds) == len(shapes), item["id"]
