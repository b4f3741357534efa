"""Stage-level beam search, driven by scripted ``generate`` and table ``score`` callables.

The search is the unit under test; the engine and verifier are its injected inputs, so small
deterministic fakes stand in for them. Expected trees are worked out by hand in each test.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from reasoner.search import (
    LLAVA_COT_STAGES,
    BeamConfig,
    BeamNode,
    Continuation,
    beam_search,
    is_complete,
    run_beam_search,
    step_stop,
)


def C(text: str, finished: bool = False) -> Continuation:
    return Continuation(text, finished)


class Engine:
    """``generate``: the scripted continuations of each prefix (the first n); logs every call."""

    def __init__(self, script: dict[str, list[Continuation]]):
        self.script = script
        self.calls: list[tuple[list[str], int, list[str]]] = []

    def __call__(self, prefixes, n, stop):
        self.calls.append((list(prefixes), n, list(stop)))
        return [self.script[p][:n] for p in prefixes]


class Verifier:
    """``score``: a fixed score per full response (KeyError for one the test did not expect)."""

    def __init__(self, table: dict[str, float]):
        self.table = table
        self.calls: list[tuple[list[str], list[bool]]] = []

    def __call__(self, responses, complete):
        self.calls.append((list(responses), list(complete)))
        return [self.table[r] for r in responses]


def rows(nodes: list[BeamNode]) -> list[tuple]:
    return [(n.id, n.parent, n.step, n.text, n.score, n.kept) for n in nodes]


def test_kept_beams_nodes_and_result_by_hand():
    engine = Engine({
        "": [C("a1\n"), C("a2\n"), C("a3\n")],
        "a2\n": [C("b1\n"), C("b2\n"), C("### Answer: x", finished=True)],
        "a3\n": [C("c1\n"), C("### Answer: y\n"), C("c1\n")],  # the second "c1\n" is a duplicate
        "a3\nc1\n": [C("d1\n"), C("### Answer: z", finished=True), C("d2\n")],
    })
    verifier = Verifier({
        "a1\n": 0.5, "a2\n": 0.9, "a3\n": 0.7,
        "a2\nb1\n": 0.3, "a2\nb2\n": 0.8, "a2\n### Answer: x": 0.6,
        "a3\nc1\n": 0.85, "a3\n### Answer: y\n": 0.95,
        "a3\nc1\nd1\n": 0.2, "a3\nc1\n### Answer: z": 0.99, "a3\nc1\nd2\n": 0.1,
    })
    result = run_beam_search(engine, verifier, BeamConfig(beam_width=2, expansions=3, max_steps=3))

    assert rows(result.nodes) == [
        (0, None, 0, "a1\n", 0.5, False),
        (1, None, 0, "a2\n", 0.9, True),
        (2, None, 0, "a3\n", 0.7, True),
        (3, 1, 1, "b1\n", 0.3, False),
        (4, 1, 1, "b2\n", 0.8, False),
        (5, 1, 1, "### Answer: x", 0.6, False),
        (6, 2, 1, "c1\n", 0.85, True),
        (7, 2, 1, "### Answer: y\n", 0.95, True),  # complete: leaves the active set
        (8, 6, 2, "d1\n", 0.2, True),  # still active when the budget ends: not completed
        (9, 6, 2, "### Answer: z", 0.99, True),
        (10, 6, 2, "d2\n", 0.1, False),
    ]
    assert [c[:2] for c in engine.calls] == [([""], 3), (["a2\n", "a3\n"], 3), (["a3\nc1\n"], 3)]
    assert all(stop == ["\n"] for *_, stop in engine.calls)
    # One batched score call per step; the duplicate "c1\n" is scored once.
    assert verifier.calls[1] == (
        ["a2\nb1\n", "a2\nb2\n", "a2\n### Answer: x", "a3\nc1\n", "a3\n### Answer: y\n"],
        [False, False, True, False, True],
    )
    assert (result.text, result.score, result.finished) == ("a3\nc1\n### Answer: z", 0.99, True)
    assert result.tree()[9] == {"id": 9, "parent": 6, "step": 2, "text": "### Answer: z",
                                "score": 0.99, "kept": True}


def test_beam_width_one_is_greedy_by_score():
    engine = Engine({
        "": [C("q\n"), C("p\n")],
        "p\n": [C("### Answer: 1", finished=True), C("### Answer: 1", finished=True)],
        "q\n": [C("### Answer: 2", finished=True)] * 2,
    })
    verifier = Verifier({"p\n": 0.6, "q\n": 0.5, "p\n### Answer: 1": 0.1, "q\n### Answer: 2": 0.9})
    result = run_beam_search(engine, verifier, BeamConfig(beam_width=1, expansions=2))
    assert result.text == "p\n### Answer: 1" and result.score == 0.1  # q's better end is never seen
    assert [c[0] for c in engine.calls] == [[""], ["p\n"]]
    assert [n.kept for n in result.nodes] == [False, True, True]


def test_ties_keep_the_earlier_candidate_and_the_earliest_finished_wins():
    engine = Engine({"": [C("### Answer: a"), C("### Answer: b"), C("### Answer: c")]})
    verifier = Verifier({"### Answer: a": 0.5, "### Answer: b": 0.7, "### Answer: c": 0.7})
    result = run_beam_search(engine, verifier, BeamConfig(beam_width=2, expansions=3))
    assert [n.kept for n in result.nodes] == [False, True, True]
    assert result.text == "### Answer: b"
    assert len(engine.calls) == 1  # every kept beam finished: the search stops early


def test_budget_reached_forces_completion_of_the_kept_beams():
    engine = Engine({
        "": [C("x\n"), C("y\n")],
        "x\n": [C("x1\n"), C("x2\n")],
        "y\n": [C("y1\n"), C("y2\n")],
        "x\nx2\n": [C("### Answer: 2", finished=True)],
        "y\ny1\n": [C("then stop", finished=True)],
    })
    verifier = Verifier({
        "x\n": 0.2, "y\n": 0.3,
        "x\nx1\n": 0.1, "x\nx2\n": 0.5, "y\ny1\n": 0.6, "y\ny2\n": 0.0,
        "x\nx2\n### Answer: 2": 0.4, "y\ny1\nthen stop": -1.0,
    })
    result = run_beam_search(engine, verifier, BeamConfig(beam_width=2, expansions=2, max_steps=2))
    assert engine.calls[-1] == (["x\nx2\n", "y\ny1\n"], 1, [])
    assert [c[2] for c in engine.calls] == [["\n"], ["\n"], []]
    assert verifier.calls[-1][1] == [True, True]  # completions are scored complete
    assert rows(result.nodes)[-2:] == [
        (6, 3, 2, "### Answer: 2", 0.4, True),
        (7, 4, 2, "then stop", -1.0, True),
    ]
    assert (result.text, result.score, result.finished) == ("x\nx2\n### Answer: 2", 0.4, True)


def test_eos_without_an_answer_finishes_the_beam_but_is_not_complete_text():
    engine = Engine({"": [C("I give up", finished=True)]})
    verifier = Verifier({"I give up": 0.0})
    result = run_beam_search(engine, verifier, BeamConfig(beam_width=1, expansions=1))
    assert verifier.calls == [(["I give up"], [True])]
    assert (result.text, result.finished, len(engine.calls)) == ("I give up", False, 1)


def test_whitespace_only_steps_count_against_the_budget():
    def generate(prefixes, n, stop):
        return [[C("\n")] * n if stop else [C("### Answer: 0", finished=True)] for _ in prefixes]

    def score(responses, complete):
        return [float(len(r)) for r in responses]

    result = run_beam_search(generate, score, BeamConfig(beam_width=2, expansions=3, max_steps=3))
    # Each step yields one distinct candidate (three identical "\n" are deduplicated), then one
    # forced completion.
    assert [(n.step, n.parent, n.text) for n in result.nodes] == [
        (0, None, "\n"), (1, 0, "\n"), (2, 1, "\n"), (3, 2, "### Answer: 0"),
    ]
    assert result.text == "\n\n\n### Answer: 0"


def test_tags_mode_stops_at_each_stage_and_caps_the_budget_at_four():
    stages = [f"<{s}>{s.lower()}</{s}>" for s in LLAVA_COT_STAGES]
    prefixes = ["".join(stages[:i]) for i in range(4)]
    engine = Engine({p: [C(stages[i]), C(stages[i] + " ")] for i, p in enumerate(prefixes)})

    def score(responses, complete):
        return [-float(len(r)) for r in responses]  # prefer the shorter: no trailing space

    config = BeamConfig(beam_width=1, expansions=2, max_steps=8, step_format="tags")
    result = run_beam_search(engine, score, config)
    assert [c[2] for c in engine.calls] == [[f"</{s}>"] for s in LLAVA_COT_STAGES]
    assert result.text == "".join(stages) and result.finished
    assert [step_stop(config, i) for i in range(4)] == [["</SUMMARY>"], ["</CAPTION>"],
                                                        ["</REASONING>"], ["</CONCLUSION>"]]
    with pytest.raises(ValueError, match="step_index"):
        step_stop(config, 4)


def test_async_callables_and_awaitable_responses():
    class Response:  # like a Ray Serve DeploymentResponse: awaitable, not a coroutine
        def __init__(self, value):
            self.value = value

        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return self.value

    async def generate(prefixes, n, stop):
        await asyncio.sleep(0)
        return [[C("s\n"), C("### Answer: 3", finished=True)][:n] for _ in prefixes]

    def score(responses, complete):
        return Response([1.0 if c else 0.0 for c in complete])

    config = BeamConfig(beam_width=1, expansions=2)
    assert run_beam_search(generate, score, config).text == "### Answer: 3"
    assert asyncio.run(beam_search(generate, score, config)).text == "### Answer: 3"


def test_is_complete():
    lines, tags = BeamConfig(), BeamConfig(step_format="tags")
    assert is_complete("a\n### Answer: 5", lines) and is_complete("a\n###answer: 5\n", lines)
    assert not is_complete("a\n### Answer:\n", lines) and not is_complete("a\n", lines)
    assert is_complete("<CONCLUSION>5</CONCLUSION>\n", tags)
    assert not is_complete("<SUMMARY>s</SUMMARY>", tags)
    assert step_stop(lines, 7) == ["\n"]


@pytest.mark.parametrize("kwargs, field", [
    ({"beam_width": 0}, "beam_width"),
    ({"expansions": True}, "expansions"),
    ({"max_steps": "3"}, "max_steps"),
    ({"step_format": "xml"}, "step_format"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BeamConfig(**kwargs)


def _ok_generate(prefixes, n, stop):
    return [[C("### Answer: 1", finished=True)] * n for _ in prefixes]


@pytest.mark.parametrize("generate, score, error, match", [
    (lambda p, n, s: [], lambda r, c: [0.0] * len(r), ValueError, "0 lists for 1 prefixes"),
    (lambda p, n, s: [[C("a")]], lambda r, c: [0.0] * len(r), ValueError, "1 continuations for prefix 0"),
    (lambda p, n, s: [["a", "b"]], lambda r, c: [0.0] * len(r), TypeError, "Continuation"),
    (_ok_generate, lambda r, c: [], ValueError, "0 scores for 1 responses"),
    (_ok_generate, lambda r, c: [math.nan], ValueError, "NaN"),
    (_ok_generate, lambda r, c: ["0.5"], TypeError, "string"),
])
def test_bad_callable_outputs_raise(generate, score, error, match):
    with pytest.raises(error, match=match):
        run_beam_search(generate, score, BeamConfig(beam_width=1, expansions=2))
