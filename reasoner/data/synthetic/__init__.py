"""The synthetic multimodal reasoning suite: the embedded default dataset and offline teacher.

Four families rendered with Pillow and a built-in 3 x 5 bitmap font (no system fonts, so images
are byte-identical everywhere): ``chart`` (bar charts), ``counting`` (coloured shapes),
``geometry`` (labelled squares, rectangles, triangles) and ``document`` (lettered form fields).
Each item is a row of the examples schema with a ground-truth rationale, one step a line, ending
in ``### Answer: <answer>``; a share of items are 4-option multiple choice (metric "mc").

    from reasoner.data.synthetic import SuiteConfig, generate_suite
    items = generate_suite(SuiteConfig(num_items=1000, seed=0))
"""

from reasoner.data.synthetic.font import GLYPH_HEIGHT, GLYPH_SPACING, GLYPH_WIDTH, GLYPHS
from reasoner.data.synthetic.suite import (
    COLUMNS,
    DEFAULT_DIFFICULTY,
    FAMILIES,
    MIN_IMAGE_SIZE,
    SPLITS,
    TOKEN_PATTERN,
    SuiteConfig,
    generate_items,
    generate_suite,
    item_text,
    split_of,
    split_sizes,
    suite_text,
    vocabulary,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_DIFFICULTY",
    "FAMILIES",
    "GLYPHS",
    "GLYPH_HEIGHT",
    "GLYPH_SPACING",
    "GLYPH_WIDTH",
    "MIN_IMAGE_SIZE",
    "SPLITS",
    "TOKEN_PATTERN",
    "SuiteConfig",
    "generate_items",
    "generate_suite",
    "item_text",
    "split_of",
    "split_sizes",
    "suite_text",
    "vocabulary",
]
