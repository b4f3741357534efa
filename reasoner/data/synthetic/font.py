"""A tiny bitmap font (3 x 5 pixels a glyph), so text renders identically on every machine.

No system font is used anywhere in the suite. Every glyph fills its whole 3 x 5 box (its first
and last row and column hold ink) and is one 8-connected blob, so a reader can cut text into
glyphs by connected components and match each against ``GLYPHS`` exactly (the tests do).
"""

from __future__ import annotations

from PIL import ImageDraw

GLYPH_WIDTH = 3
GLYPH_HEIGHT = 5
GLYPH_SPACING = 1  # blank columns between two glyphs of a word

_ROWS: dict[str, tuple[str, str, str, str, str]] = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": ("##.", ".#.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    "A": (".#.", "#.#", "###", "#.#", "#.#"),
    "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": (".##", "#..", "#..", "#..", ".##"),
    "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"),
    "F": ("###", "#..", "##.", "#..", "#.."),
    "G": (".##", "#..", "#.#", "#.#", ".##"),
    "H": ("#.#", "#.#", "###", "#.#", "#.#"),
}

GLYPHS: dict[str, tuple[tuple[int, ...], ...]] = {
    char: tuple(tuple(1 if c == "#" else 0 for c in row) for row in rows)
    for char, rows in _ROWS.items()
}
"""Character -> 5 rows of 3 pixels (1 = ink). Digits 0-9 and the letters A-H."""

_INK_OFFSETS: dict[str, tuple[tuple[int, int], ...]] = {
    char: tuple((x, y) for y, row in enumerate(rows) for x, bit in enumerate(row) if bit)
    for char, rows in GLYPHS.items()
}


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of ``text`` drawn at ``scale`` (a space is one blank glyph)."""
    if not text:
        return 0
    return (len(text) * (GLYPH_WIDTH + GLYPH_SPACING) - GLYPH_SPACING) * scale


def text_height(scale: int = 1) -> int:
    """Height in pixels of a line of text drawn at ``scale``."""
    return GLYPH_HEIGHT * scale


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    fill: tuple[int, int, int],
    scale: int = 1,
) -> None:
    """Draw ``text`` with its top-left corner at ``xy``; ``scale`` magnifies each pixel.

    Raises ValueError for a character the font lacks (digits, A-H and space are drawn).
    """
    x0, y0 = xy
    points: list[tuple[int, int]] = []
    for i, char in enumerate(text):
        if char == " ":
            continue
        offsets = _INK_OFFSETS.get(char)
        if offsets is None:
            raise ValueError(
                f"character {char!r} is not in the bitmap font; use digits, A-H or space"
            )
        gx = x0 + i * (GLYPH_WIDTH + GLYPH_SPACING) * scale
        if scale == 1:
            points.extend((gx + dx, y0 + dy) for dx, dy in offsets)
        else:
            for dx, dy in offsets:
                px, py = gx + dx * scale, y0 + dy * scale
                draw.rectangle((px, py, px + scale - 1, py + scale - 1), fill=fill)
    if points:
        draw.point(points, fill=fill)
