"""The suite: configuration, deterministic generation of items, splits, and the suite's text.

Determinism. Item ``index`` of ``split`` is drawn from its own ``random.Random`` seeded with
``(seed, family, split, index)`` (string seeds hash with SHA-512, independent of
PYTHONHASHSEED and of any global random state), so an item does not depend on which items were
generated before it, and the first items of a split stay the same when ``num_items`` grows.
Items cycle through ``families`` in order.

Splits. A scene (everything that decides an image's pixels but its noise) belongs to exactly one
split, by a hash of the family and the scene: an item draws scenes until one falls in its split.
So no image, not even a noisy copy of a scene, is shared between train, val and test, whatever
part of the suite is generated where. ``generate_suite`` checks image hashes across splits once
more and drops a later item that repeats another split's image (never expected; logged).
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from reasoner.data.synthetic import chart, counting, document, geometry
from reasoner.data.synthetic.family import (
    ANSWER_LINE,
    COMMON_TEMPLATES,
    LETTERS,
    OPTION_STEP,
    Family,
    Knobs,
    multiple_choice,
)

logger = logging.getLogger(__name__)

_FAMILIES: dict[str, Family] = {
    f.name: f for f in (chart.FAMILY, counting.FAMILY, geometry.FAMILY, document.FAMILY)
}
FAMILIES: tuple[str, ...] = tuple(_FAMILIES)
SPLITS: tuple[str, ...] = ("train", "val", "test")
MIN_IMAGE_SIZE = 40  # below this the document's five lines or the chart's 2-px units do not fit
MAX_IMAGE_SIZE = 512
DEFAULT_DIFFICULTY = 0.5
COLUMNS = (
    "id", "source", "split", "image", "question", "choices", "answers", "metric", "rationale",
    "caption",
)  # fmt: skip
TOKEN_PATTERN = re.compile(r"\d+|[A-Za-z]+|[^\sA-Za-z\d]")
"""How ``vocabulary`` splits text: runs of digits, runs of letters, single other characters."""

_MAX_SCENE_DRAWS = 100_000


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SuiteConfig:
    """What suite to generate. Validated at construction; errors name the field and the fix."""

    num_items: int = field(
        default=10_000, metadata=_help("items over all splits (train gets the remainder)")
    )
    seed: int = field(default=0, metadata=_help("same seed and settings: byte-identical items"))
    image_size: int = field(
        default=48,
        metadata=_help(f"square image side in pixels, {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE}"),
    )
    difficulty: float = field(
        default=DEFAULT_DIFFICULTY,
        metadata=_help(
            "0-1: bars, objects and fields per image, value ranges, pixel noise and specks, "
            "share of multi-step questions (see Knobs.from_difficulty). The default 0.5 keeps "
            "a converged small model wrong on part of the suite, so DPO has pairs to learn from"
        ),
    )
    families: tuple[str, ...] = field(
        default=FAMILIES, metadata=_help(f"families to cycle through, of {FAMILIES}")
    )
    multiple_choice_fraction: float = field(
        default=0.25, metadata=_help("0-1: share of items asked as 4-option multiple choice")
    )
    split_fractions: tuple[float, float, float] = field(
        default=(0.8, 0.1, 0.1), metadata=_help("shares of train, val and test; sum to 1")
    )

    def __post_init__(self) -> None:
        for name in ("num_items", "seed", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"SuiteConfig.{name} must be an integer, got {value!r}")
        if self.num_items < 1:
            raise ValueError(f"SuiteConfig.num_items must be at least 1, got {self.num_items}")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"SuiteConfig.image_size={self.image_size} is outside "
                f"{MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE}: below {MIN_IMAGE_SIZE} px the bitmap font "
                f"and the charts' units are not legible; use e.g. 48"
            )
        for name in ("difficulty", "multiple_choice_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0.0 <= value <= 1.0
            ):
                raise ValueError(f"SuiteConfig.{name} must be a number in [0, 1], got {value!r}")
        if isinstance(self.families, str) or not self.families:
            raise ValueError(
                f"SuiteConfig.families must be a non-empty list of family names from "
                f"{list(FAMILIES)}, got {self.families!r}"
            )
        self.families = tuple(self.families)
        unknown = [f for f in self.families if f not in _FAMILIES]
        if unknown:
            raise ValueError(
                f"SuiteConfig.families has unknown families {unknown}; valid: {list(FAMILIES)}"
            )
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"SuiteConfig.families repeats a family: {list(self.families)}")
        fractions = tuple(self.split_fractions)
        if (
            len(fractions) != 3
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in fractions)
            or any(f < 0 for f in fractions)
            or abs(sum(fractions) - 1.0) > 1e-6
            or fractions[0] <= 0
        ):
            raise ValueError(
                f"SuiteConfig.split_fractions must be three non-negative numbers (train, val, "
                f"test) summing to 1 with train > 0, got {self.split_fractions!r}; "
                f"e.g. (0.8, 0.1, 0.1)"
            )
        self.split_fractions = tuple(float(f) for f in fractions)  # type: ignore[assignment]

    @property
    def knobs(self) -> Knobs:
        return Knobs.from_difficulty(float(self.difficulty))


def split_sizes(config: SuiteConfig) -> dict[str, int]:
    """Items per split: val and test rounded from their fractions, train the remainder."""
    val = int(config.num_items * config.split_fractions[1] + 0.5)
    test = int(config.num_items * config.split_fractions[2] + 0.5)
    return {"train": config.num_items - val - test, "val": val, "test": test}


def split_of(family: str, scene: object, fractions: tuple[float, float, float]) -> str:
    """The split a scene belongs to: a uniform hash of (family, scene) cut by ``fractions``."""
    digest = hashlib.blake2b(f"{family}|{scene!r}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def _png(image: Image.Image, noise: int, rng: random.Random) -> bytes:
    if noise:
        gen = np.random.default_rng(rng.getrandbits(64))
        pixels = np.asarray(image, dtype=np.int16)
        pixels = pixels + gen.integers(-noise, noise + 1, size=pixels.shape, dtype=np.int16)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _item(config: SuiteConfig, knobs: Knobs, split: str, index: int) -> dict:
    family = _FAMILIES[config.families[index % len(config.families)]]
    rng = random.Random(f"reasoner.synthetic/{config.seed}/{family.name}/{split}/{index}")
    for _ in range(_MAX_SCENE_DRAWS):
        scene = family.sample(rng, knobs, config.image_size)
        if split_of(family.name, scene, config.split_fractions) == split:
            break
    else:
        raise RuntimeError(
            f"no {family.name} scene for split {split!r} in {_MAX_SCENE_DRAWS} draws; "
            f"raise SuiteConfig.split_fractions for {split!r} or the difficulty"
        )
    question = family.ask(scene, rng, knobs)
    steps = list(question.steps)
    if rng.random() < config.multiple_choice_fraction:
        choices, answer = multiple_choice(question, rng)
        steps.append(OPTION_STEP.format(letter=answer, answer=question.answer))
        metric = "mc"
    else:
        choices, answer, metric = None, question.answer, question.metric
    steps.append(ANSWER_LINE.format(answer=answer))
    return {
        "id": f"syn-{family.name}-{split}-{index:06d}",
        "source": f"synthetic/{family.name}",
        "split": split,
        "image": _png(family.render(scene), knobs.noise, rng),
        "question": question.text,
        "choices": choices,
        "answers": [answer],
        "metric": metric,
        "rationale": "\n".join(steps),
        "caption": "\n".join(family.describe(scene)),
    }


def generate_items(
    config: SuiteConfig, split: str, start: int = 0, count: int | None = None
) -> list[dict]:
    """Items ``start`` to ``start + count`` of ``split`` (default: to the split's end).

    Any slicing of a split gives the same items as generating it whole, so slices can be made
    in parallel (e.g. one Ray task each).
    """
    sizes = split_sizes(config)
    if split not in sizes:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if start < 0 or (count is not None and count < 0):
        raise ValueError(f"start and count must be non-negative, got start={start} count={count}")
    stop = sizes[split] if count is None else min(start + count, sizes[split])
    knobs = config.knobs
    return [_item(config, knobs, split, i) for i in range(start, stop)]


def generate_suite(config: SuiteConfig) -> list[dict]:
    """Every item of every split (train, then val, then test), as rows of the examples schema."""
    began = time.perf_counter()
    by_split = {split: generate_items(config, split) for split in SPLITS}
    owner: dict[bytes, str] = {}
    for split in ("test", "val", "train"):  # held-out splits win a (never expected) clash
        kept = []
        for item in by_split[split]:
            digest = hashlib.sha256(item["image"]).digest()
            if owner.setdefault(digest, split) != split:
                logger.warning("dropping %s: its image is also in %s", item["id"], owner[digest])
                continue
            kept.append(item)
        by_split[split] = kept
    items = [item for split in SPLITS for item in by_split[split]]
    elapsed = time.perf_counter() - began
    logger.info(
        "generated %d synthetic items (%s) in %.1f s",
        len(items),
        ", ".join(f"{s} {len(by_split[s])}" for s in SPLITS),
        elapsed,
    )
    return items


def item_text(item: dict) -> str:
    """An item's question, its options as "A. 11" lines (if any) and its rationale."""
    lines = [item["question"]]
    if item.get("choices"):
        lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, item["choices"])]
    if item.get("rationale"):
        lines.append(item["rationale"])
    return "\n".join(lines)


def suite_text(items: Iterable[dict]) -> Iterator[str]:
    """The text of each item (``item_text``), e.g. to train a word-level tokenizer on."""
    for item in items:
        yield item_text(item)


def vocabulary(config: SuiteConfig | None = None) -> list[str]:
    """Every token (``TOKEN_PATTERN``) the suite's text can contain under ``config``, sorted.

    The template words, colour, shape and field names, option letters, the multiple-choice
    option formatting (``item_text``) and every integer from 0 to the largest one any family can
    produce at this difficulty and size (plus a margin for the nearby distractors).
    """
    config = config or SuiteConfig()
    knobs = config.knobs
    words: set[str] = set(LETTERS) | {"."}
    largest = 0
    for name in config.families:
        family = _FAMILIES[name]
        for template in (*family.templates, *COMMON_TEMPLATES):
            words.update(TOKEN_PATTERN.findall(re.sub(r"\{\w+\}", " ", template)))
        words.update(family.names)
        largest = max(largest, family.max_number(knobs, config.image_size))
    words.update(str(n) for n in range(largest + 4))
    return sorted(words)
