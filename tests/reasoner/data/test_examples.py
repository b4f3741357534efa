"""reasoner.data.examples: the fixed subsets stages take with max_questions / max_examples."""

from __future__ import annotations

from collections import Counter

from reasoner.data.examples import subset


def ids(n_per_family: int = 50) -> list[str]:
    return [f"syn-{family}-val-{i:06d}" for family in ("chart", "counting", "document", "geometry")
            for i in range(n_per_family)]


def test_a_subset_mixes_families_and_is_fixed() -> None:
    chosen = subset(ids(), 40)
    assert len(chosen) == 40 and chosen == sorted(chosen) and set(chosen) <= set(ids())
    per_family = Counter(i.split("-")[1] for i in chosen)
    assert set(per_family) == {"chart", "counting", "document", "geometry"}  # sorted()[:40] is all chart
    assert min(per_family.values()) >= 4
    assert subset(list(reversed(ids())), 40) == chosen  # the input order does not matter


def test_a_larger_subset_keeps_the_smaller_one() -> None:
    assert set(subset(ids(), 10)) <= set(subset(ids(), 30))


def test_no_limit_or_a_large_one_is_everything() -> None:
    assert subset(ids(3), None) == sorted(ids(3)) == subset(ids(3), 1000)
    assert subset(["b", "a", "a"], None) == ["a", "b"]
