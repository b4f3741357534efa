"""Tests of the synthetic suite: determinism, splits, rationales, text and configuration.

Legibility (decoders that read each family back from the pixels) is in test_synthetic_legibility.py.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections import Counter

import numpy as np
import pytest

from reasoner.answers import extract_answer, score
from reasoner.data.synthetic import (
    COLUMNS,
    FAMILIES,
    TOKEN_PATTERN,
    SuiteConfig,
    generate_items,
    generate_suite,
    split_sizes,
    suite_text,
    vocabulary,
)
from reasoner.data.synthetic.family import LETTERS, PALETTE
from reasoner.schema import validate_rows

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def big_suite() -> tuple[SuiteConfig, list[dict], float]:
    """The default suite at 10,000 items, timed."""
    config = SuiteConfig(num_items=10_000, seed=0)
    began = time.perf_counter()
    items = generate_suite(config)
    return config, items, time.perf_counter() - began


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_items_regardless_of_global_random_state():
    config = SuiteConfig(num_items=120, seed=7)
    random.seed(1)
    np.random.seed(1)
    first = generate_suite(config)
    random.seed(2)
    np.random.seed(2)
    random.random()
    second = generate_suite(SuiteConfig(num_items=120, seed=7))
    assert first == second


def test_different_seed_gives_different_items():
    a = generate_suite(SuiteConfig(num_items=60, seed=0))
    b = generate_suite(SuiteConfig(num_items=60, seed=1))
    assert [i["id"] for i in a] == [i["id"] for i in b]
    assert sum(x["image"] != y["image"] for x, y in zip(a, b)) >= 55


def test_slices_equal_the_whole_and_items_do_not_depend_on_suite_size():
    config = SuiteConfig(num_items=200)
    whole = generate_suite(config)
    for split in ("train", "val", "test"):
        items = [i for i in whole if i["split"] == split]
        assert generate_items(config, split, 3, 5) == items[3:8]
    bigger = generate_suite(SuiteConfig(num_items=400))
    assert [i for i in bigger if i["split"] == "train"][:50] == whole[:50]


# --------------------------------------------------------------------------- splits and rows


def test_splits_share_no_image_and_no_question_image_pair(big_suite):
    _, items, _ = big_suite
    images: dict[str, set[bytes]] = {}
    pairs: dict[str, set[tuple[str, bytes]]] = {}
    for item in items:
        digest = hashlib.sha256(item["image"]).digest()
        images.setdefault(item["split"], set()).add(digest)
        pairs.setdefault(item["split"], set()).add((item["question"], digest))
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not images[a] & images[b], (a, b)
        assert not pairs[a] & pairs[b], (a, b)


def test_repeated_scenes_never_cross_splits():
    """Without noise, small scenes repeat: every repeat must stay inside one split."""
    items = generate_suite(SuiteConfig(num_items=4000, difficulty=0.0, families=("chart",)))
    splits_of: dict[bytes, set[str]] = {}
    repeats = Counter()
    for item in items:
        digest = hashlib.sha256(item["image"]).digest()
        repeats[digest] += 1
        splits_of.setdefault(digest, set()).add(item["split"])
    assert sum(1 for n in repeats.values() if n > 1) >= 10  # the check below has teeth
    assert all(len(splits) == 1 for splits in splits_of.values())


def test_split_proportions_follow_the_config(big_suite):
    config, items, _ = big_suite
    counts = Counter(item["split"] for item in items)
    assert dict(counts) == split_sizes(config) == {"train": 8000, "val": 1000, "test": 1000}
    other = SuiteConfig(num_items=1000, split_fractions=(0.6, 0.3, 0.1))
    counts = Counter(item["split"] for item in generate_suite(other))
    assert counts == {"train": 600, "val": 300, "test": 100}


def test_rows_follow_the_examples_schema(big_suite):
    _, items, _ = big_suite
    validate_rows(items, "examples")
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids)
    for item in items:
        assert tuple(item) == COLUMNS
        family = item["source"].removeprefix("synthetic/")
        assert family in FAMILIES
        assert re.fullmatch(rf"syn-{family}-{item['split']}-\d{{6}}", item["id"])
        assert isinstance(item["image"], bytes) and item["image"].startswith(b"\x89PNG")
        assert isinstance(item["answers"], list) and len(item["answers"]) == 1
        if item["metric"] == "mc":
            assert isinstance(item["choices"], list)
        else:
            assert item["choices"] is None and item["metric"] in ("relaxed", "exact")
    mix = Counter((item["source"], item["metric"] == "mc") for item in items)
    for family in FAMILIES:
        assert mix[(f"synthetic/{family}", True)] > 400  # about a quarter of 2,500
        assert mix[(f"synthetic/{family}", False)] > 1600


_ARITHMETIC = re.compile(r"(\d+(?: [-+*/] \d+)+) = (\d+)\.")


def test_rationales_are_consistent_and_end_with_the_answer(big_suite):
    _, items, _ = big_suite
    for item in items:
        lines = item["rationale"].splitlines()
        answer = item["answers"][0]
        assert lines[-1] == f"### Answer: {answer}", item["id"]
        assert extract_answer(item["rationale"]) == answer
        assert score(extract_answer(item["rationale"]), item["answers"], item["metric"],
                     item["choices"]) == 1.0  # fmt: skip
        known: set[int] = {2, 4}  # the formulas' constants
        result = None
        for line in lines[:-1]:
            if m := _ARITHMETIC.fullmatch(line):
                operands = [int(t) for t in re.findall(r"\d+", m[1])]
                assert set(operands) <= known, f"{item['id']}: {line} uses an unread value"
                assert eval(m[1]) == int(m[2]), f"{item['id']}: {line}"  # digits and + - * /
                result = m[2]
            known.update(int(t) for t in re.findall(r"\d+", line))
        steps = lines[:-2] if item["metric"] == "mc" else lines[:-1]
        if result is None:  # one read, or a colour named by the last step
            last = re.fullmatch(r"The \w+ bar is the (\w+) bar\.|.* is (\d+)\.", steps[-1])
            result = last[1] or last[2]
        if item["metric"] == "mc":
            choices = item["choices"]
            assert len(choices) == 4 and len(set(choices)) == 4, item["id"]
            assert answer in LETTERS
            assert lines[-2] == f"Option {answer} is {choices[LETTERS.index(answer)]}."
            assert choices[LETTERS.index(answer)] == result, item["id"]
            kinds = {c.isdigit() for c in choices}
            assert kinds == {result.isdigit()}, item["id"]  # numbers among numbers
            if not result.isdigit():
                assert set(choices) <= set(PALETTE)
        else:
            assert answer == result, item["id"]


def test_multiple_choice_letters_are_spread(big_suite):
    _, items, _ = big_suite
    letters = Counter(item["answers"][0] for item in items if item["metric"] == "mc")
    assert set(letters) == set(LETTERS)
    assert min(letters.values()) > 0.18 * sum(letters.values())


def test_questions_span_one_to_several_steps(big_suite):
    _, items, _ = big_suite
    reads = Counter()
    for item in items:
        n = sum(1 for line in item["rationale"].splitlines() if re.fullmatch(r".* is \d+\.", line)
                and not line.startswith("Option"))  # fmt: skip
        reads[min(n, 3)] += 1
    assert all(reads[k] > 0.15 * len(items) for k in (1, 2, 3)), reads


# --------------------------------------------------------------------------- text and vocabulary


def test_suite_text_stays_within_the_vocabulary(big_suite):
    config, items, _ = big_suite
    vocab = set(vocabulary(config))
    seen = set()
    for text in suite_text(items):
        seen.update(TOKEN_PATTERN.findall(text))
    assert seen <= vocab, sorted(seen - vocab)
    words = {w for w in vocab if not w.isdigit()}
    assert words <= seen, sorted(words - seen)  # no template word is never used
    assert len(vocab) < 400


def test_suite_text_holds_question_options_and_rationale():
    item = next(i for i in generate_suite(SuiteConfig(num_items=40, multiple_choice_fraction=1.0)))
    (text,) = suite_text([item])
    assert text.startswith(item["question"] + "\nA. " + item["choices"][0] + "\n")
    assert text.endswith(item["rationale"])


# --------------------------------------------------------------------------- speed


def test_generates_ten_thousand_items_quickly(big_suite):
    _, items, elapsed = big_suite
    assert len(items) == 10_000
    rate = len(items) / elapsed
    print(f"\nsynthetic suite: 10,000 items in {elapsed:.1f} s ({rate:.0f} items/s)")
    assert elapsed < 300


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_items": 0}, "num_items"),
        ({"num_items": 2.5}, "num_items"),
        ({"seed": "0"}, "seed"),
        ({"image_size": 32}, "image_size=32"),
        ({"image_size": 1024}, "image_size=1024"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"difficulty": -0.1}, "difficulty"),
        ({"difficulty": True}, "difficulty"),
        ({"multiple_choice_fraction": 2}, "multiple_choice_fraction"),
        ({"families": ("chart", "maps")}, r"families .*\['maps'\].*'chart', 'counting'"),
        ({"families": ()}, "families"),
        ({"families": "chart"}, "families"),
        ({"families": ("chart", "chart")}, "families"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
        ({"split_fractions": (0.8, 0.2)}, "split_fractions"),
        ({"split_fractions": (0.0, 0.5, 0.5)}, "split_fractions"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SuiteConfig(**kwargs)


def test_config_accepts_lists_from_yaml_and_families_subset():
    config = SuiteConfig(num_items=20, families=["document"], split_fractions=[0.5, 0.25, 0.25])
    assert config.families == ("document",) and config.split_fractions == (0.5, 0.25, 0.25)
    items = generate_suite(config)
    assert {i["source"] for i in items} == {"synthetic/document"}
    assert Counter(i["split"] for i in items) == {"train": 10, "val": 5, "test": 5}


def test_generate_items_rejects_unknown_split():
    with pytest.raises(ValueError, match="split"):
        generate_items(SuiteConfig(num_items=10), "dev")
