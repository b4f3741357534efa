"""Stage (A): which rationales are kept, the rows written, and the rejections, over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from reasoner.options import ConfigError, from_dict
from reasoner.data.synthetic import SuiteConfig, generate_suite
from reasoner.distill import (
    NO_MARKER,
    DistillConfig,
    distill_examples,
    distill_rows,
    make_teacher,
    normalise_rationale,
)
from reasoner.prompts import CAPTION_PROMPT, build_prompt
from reasoner.schema import validate_rows
from reasoner.teacher import BUDGET_EXHAUSTED, GroundTruthTeacher, OpenAITeacher, TeacherReply
from tests.support.openai_servers import (
    Fault,
    FaultProxy,
    GroundTruthChatServer,
    question_key,
    rationale_table,
    unique_examples,
)


pytestmark = pytest.mark.usefixtures("no_openai_env")


@pytest.fixture(scope="module")
def suite() -> list[dict]:
    return generate_suite(SuiteConfig(num_items=200, seed=0))


@pytest.fixture(scope="module")
def examples(suite) -> list[dict]:
    return unique_examples(suite, limit=14)


def openai_config(url: str, **kwargs) -> DistillConfig:
    return DistillConfig(teacher="openai", model="ground-truth", base_url=f"{url}/v1", **kwargs)


def reply(text: str | None, **kwargs) -> TeacherReply:
    return TeacherReply(text=text, **kwargs)


# --- config ---------------------------------------------------------------------------------------


def test_config_defaults_and_help():
    config = DistillConfig()
    assert (config.teacher, config.correct_threshold, config.include_direct) == ("ground_truth", 0.5, True)
    assert all(f.metadata.get("help") for f in dataclasses.fields(DistillConfig))


@pytest.mark.parametrize("field, value", [
    ("teacher", "gpt"), ("model", ""), ("base_url", "127.0.0.1:8000"), ("temperature", -1),
    ("max_tokens", 0), ("max_concurrency", 0), ("max_retries", -1), ("timeout_s", 0),
    ("max_requests", -5), ("max_tokens_budget", 1.5), ("correct_threshold", 2.0), ("include_direct", "yes"),
    ("give_up_pending", "yes"),
])
def test_bad_config_values_name_field_and_value(field, value):
    with pytest.raises(ConfigError, match="^" + re.escape(f"{field}={value!r}")):
        DistillConfig(**{field: value})


def test_config_from_data_refuses_unknown_keys():
    assert from_dict(DistillConfig, {"teacher": "openai", "max_requests": 10}).max_requests == 10
    with pytest.raises(ConfigError, match="max_request"):
        from_dict(DistillConfig, {"max_request": 10})


def test_make_teacher_builds_the_named_teacher():
    assert isinstance(make_teacher(DistillConfig()), GroundTruthTeacher)
    teacher = make_teacher(DistillConfig(teacher="openai", base_url="http://127.0.0.1:1/v1", max_requests=7))
    assert isinstance(teacher, OpenAITeacher) and teacher.budget.max_requests == 7


# --- rows and rejections (no HTTP) ----------------------------------------------------------------


def test_rationale_is_normalised_to_one_step_a_line():
    text = "1. The side is 12.\n\n- 4 * 12 = 48.\nStep 3: Option D is 48. ### Answer: (D)\nthat's all"
    assert normalise_rationale(text, ["49", "50", "47", "48"]) == (
        "The side is 12.\n4 * 12 = 48.\nOption D is 48.\n### Answer: D")
    assert normalise_rationale("a\n### Answer: 3\nb\n###answer : 4") == "a\nb\n### Answer: 4"
    for bad, reason in (("The answer is 4.", NO_MARKER), ("### Answer: 4", "no reasoning steps")):
        with pytest.raises(ValueError, match=reason):
            normalise_rationale(bad)


def test_kept_rationale_gives_a_cot_a_direct_and_a_caption_row(examples):
    example = next(e for e in examples if e["choices"] is None)
    text = "  " + example["rationale"].replace("\n", "\n\n")
    outcome = distill_rows(example, reply(text), DistillConfig())
    assert outcome.kept and outcome.rejected is None and not outcome.pending
    cot, direct, caption = outcome.rows
    assert cot == {"id": example["id"], "image": example["image"], "mode": "cot",
                   "prompt": build_prompt(example["question"], None, "cot"), "completion": example["rationale"]}
    assert direct == {"id": example["id"], "image": example["image"], "mode": "direct",
                      "prompt": build_prompt(example["question"], None, "direct"),
                      "completion": example["answers"][0]}
    assert caption == {"id": example["id"], "image": example["image"], "mode": "caption",
                       "prompt": CAPTION_PROMPT, "completion": example["caption"]}
    only = DistillConfig(include_direct=False, include_caption=False)
    assert [r["mode"] for r in distill_rows(example, reply(text), only).rows] == ["cot"]
    # An example without a caption (every real dataset's) gets no caption row.
    for uncaptioned in ({**example, "caption": None}, {k: v for k, v in example.items() if k != "caption"}):
        assert [r["mode"] for r in distill_rows(uncaptioned, reply(text), DistillConfig()).rows] == ["cot", "direct"]


def test_rejected_rationales_keep_the_direct_row(examples):
    example = next(e for e in examples if e["choices"] is None)
    cases = {
        "The bar is 5.\n### Answer: 5": f"teacher answer wrong: got 5, expected {example['answers'][0]}",
        "The bar is 5.": NO_MARKER,
        "### Answer: 5": "teacher gave no reasoning steps",
    }
    for text, reason in cases.items():
        outcome = distill_rows(example, reply(text), DistillConfig())
        assert outcome.rejected["reason"] == reason and outcome.rejected["stage"] == "distill"
        assert [r["mode"] for r in outcome.rows] == ["direct", "caption"] and not outcome.kept
    cut = distill_rows(example, reply("The bar", finish_reason="length"), DistillConfig())
    assert cut.rejected["reason"] == f"{NO_MARKER} (cut off at max_tokens)"
    failed = distill_rows(example, reply(None, error="APITimeoutError: Request timed out."), DistillConfig())
    assert failed.rejected["reason"] == "teacher error after retries: APITimeoutError: Request timed out."


def test_rows_from_ray_data_with_numpy_lists_work(examples):
    np = pytest.importorskip("numpy")
    example = next(e for e in examples if e["choices"] is not None)
    arrays = {**example, "choices": np.array(example["choices"]), "answers": np.array(example["answers"])}
    outcome = asyncio.run(distill_examples([arrays], GroundTruthTeacher(), DistillConfig()))[0]
    assert outcome.kept and outcome.rows[0]["prompt"] == build_prompt(example["question"], example["choices"], "cot")


def test_budget_exhausted_is_pending_not_rejected(examples):
    outcome = distill_rows(examples[0], reply(None, error=BUDGET_EXHAUSTED, budget_exhausted=True), DistillConfig())
    assert outcome.pending and outcome.rows == [] and outcome.rejected is None and outcome.pending_reason == "budget"


def test_transport_failures_are_pending_unless_given_up(examples):
    example = next(e for e in examples if e["choices"] is None)
    lost = reply(None, error="RateLimitError (HTTP 429): slow down", transient=True)
    outcome = distill_rows(example, lost, DistillConfig())
    assert outcome.pending and outcome.pending_reason == "transport" and not outcome.rows and not outcome.rejected
    # Given up on: a final rejection, and the ground-truth rows as for any rejected rationale.
    for failed, error in ((lost, "RateLimitError (HTTP 429): slow down"),
                          (reply(None, error=BUDGET_EXHAUSTED, budget_exhausted=True), BUDGET_EXHAUSTED)):
        outcome = distill_rows(example, failed, DistillConfig(give_up_pending=True))
        assert not outcome.pending and outcome.rejected["reason"] == f"transport: {error}"
        assert [r["mode"] for r in outcome.rows] == ["direct", "caption"]
    # A final error (the endpoint refused the request) is a rejection either way.
    refused = distill_rows(example, reply(None, error="BadRequestError (HTTP 400): bad"), DistillConfig())
    assert refused.rejected["reason"] == "teacher error after retries: BadRequestError (HTTP 400): bad"


def test_correct_threshold_decides_partial_scores(examples):
    example = {**examples[0], "metric": "vqa", "choices": None, "answers": ["red"] + ["blue"] * 9}
    text = "The bar is red.\n### Answer: red"  # one annotator agrees: VQA accuracy 0.3
    assert not distill_rows(example, reply(text), DistillConfig()).kept
    assert distill_rows(example, reply(text), DistillConfig(correct_threshold=0.3)).kept


@pytest.mark.parametrize("change, reason", [
    ({"answers": []}, "answers"), ({"metric": "bleu"}, "metric"),
    ({"image": b"\x89PNG\r\n\x1a\nnot really"}, "unreadable image"), ({"question": " "}, "question"),
])
def test_unusable_examples_are_rejected_whatever_the_reply(examples, change, reason):
    example = {**examples[0], **change}
    outcome = distill_rows(example, reply(examples[0]["rationale"]), DistillConfig())
    assert outcome.rows == [] and outcome.rejected["reason"].startswith("unusable example")
    assert reason in outcome.rejected["reason"]


def test_the_suites_own_rationales_all_pass(suite):
    outcomes = asyncio.run(distill_examples(suite, GroundTruthTeacher(), DistillConfig()))
    assert all(o.kept and o.rejected is None for o in outcomes)
    cot = {row["id"]: row["completion"] for o in outcomes for row in o.rows if row["mode"] == "cot"}
    assert cot == {e["id"]: e["rationale"] for e in suite}, "the suite's rationales are already normal"
    table = validate_rows([row for o in outcomes for row in o.rows], "sft_data")
    assert table.num_rows == 3 * len(suite)


# --- over HTTP: the ground-truth server behind the fault proxy ------------------------------------


def test_every_example_ends_kept_or_rejected_with_its_reason(examples):
    plain = [e for e in examples if e["choices"] is None]
    wrong, no_marker = plain[:2], plain[2:4]
    refused = next(e for e in examples if e["choices"] is not None)  # its key is no other's prefix
    unusable = [{**examples[0], "id": "bad-answers", "question": "Unusable one?", "answers": []},
                {**examples[0], "id": "bad-image", "question": "Unusable two?", "image": b"junk"}]
    retried = [Fault.rate_limit(retry_after=1), Fault.error(503), Fault.drop()]
    server = GroundTruthChatServer(rationale_table(examples), wrong=map(question_key, wrong),
                                   no_marker=map(question_key, no_marker))
    with server, FaultProxy(server.url, retried, match={question_key(refused): [Fault.error(400)]}) as proxy:
        config = openai_config(proxy.url, max_concurrency=4, max_retries=3, timeout_s=5.0)
        outcomes = asyncio.run(distill_examples(examples + unusable, make_teacher(config), config))

    expected = {e["id"]: None for e in examples}
    expected.update({e["id"]: f"teacher answer wrong: got 999999, expected {e['answers'][0]}" for e in wrong})
    expected.update({e["id"]: NO_MARKER for e in no_marker})
    expected[refused["id"]] = "teacher error after retries: BadRequestError (HTTP 400)"
    expected.update({"bad-answers": "unusable example: column 'answers'", "bad-image": "unusable example: unreadable"})
    assert [o.id for o in outcomes] == [e["id"] for e in examples + unusable]
    for outcome in outcomes:
        want = expected[outcome.id]
        got = None if outcome.rejected is None else outcome.rejected["reason"]
        assert (got is None) if want is None else got.startswith(want), (outcome.id, got)
        assert outcome.kept == (want is None) and not outcome.pending
        assert [r["mode"] for r in outcome.rows] == (
            [] if outcome.id.startswith("bad-") else ["cot", "direct", "caption"] if want is None
            else ["direct", "caption"])

    assert proxy.count == len(examples) + len(retried), "one request per usable example, plus the retries"
    assert len(proxy.events_for(question_key(refused))) == 1, "the 400 was not retried"
    assert len(server.requests) == len(examples) - 1
    assert not any("Unusable" in e for e in map(str, server.requests)), "no request for unusable examples"
    rows = [row for o in outcomes for row in o.rows]
    validate_rows(rows, "sft_data")
    assert len({(r["id"], r["mode"]) for r in rows}) == len(rows)
    validate_rows([o.rejected for o in outcomes if o.rejected], "rejected")


def test_a_flaky_endpoint_leaves_examples_pending_not_rejected(examples):
    plain = [e for e in examples if e["choices"] is None][:3]
    lost = plain[0]  # both attempts fail: pending; the others get through on the retry
    match = {question_key(lost): [Fault.error(503), Fault.rate_limit(retry_after=1)],
             question_key(plain[1]): [Fault.error(500)], question_key(plain[2]): [Fault.stall(2.0)]}
    with GroundTruthChatServer(rationale_table(examples)) as server, \
            FaultProxy(server.url, match=match) as proxy:
        config = openai_config(proxy.url, max_retries=1, timeout_s=1.0)
        outcomes = asyncio.run(distill_examples(plain, make_teacher(config), config))
    assert [o.pending for o in outcomes] == [True, False, False]
    assert outcomes[0].pending_reason == "transport" and not outcomes[0].rows and outcomes[0].rejected is None
    assert all(o.kept for o in outcomes[1:])


def test_budget_leaves_the_rest_pending_for_a_rerun(examples):
    with GroundTruthChatServer(rationale_table(examples)) as server:
        config = openai_config(server.url, max_requests=3, max_concurrency=1)
        first = asyncio.run(distill_examples(examples[:6], make_teacher(config), config))
        assert [o.pending for o in first] == [False] * 3 + [True] * 3
        assert all(o.kept for o in first[:3]) and all(not o.rows and o.rejected is None for o in first[3:])
        assert len(server.requests) == 3
        rest = [e for e, o in zip(examples, first) if o.pending]
        second = asyncio.run(distill_examples(rest, make_teacher(config), config))  # a fresh budget
        assert all(o.kept for o in second) and len(server.requests) == 6


# --- the wire format against vLLM's own OpenAI server ---------------------------------------------


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir, vllm_cpu_env, tmp_path_factory):
    """``vllm.entrypoints.openai.api_server`` over the tiny model, on a free 127.0.0.1 port."""
    pytest.importorskip("vllm")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir),
               "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
               "--dtype", "float32", "--max-model-len", "512"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**vllm_cpu_env, "VLLM_CPU_KVCACHE_SPACE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 300 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server's own session: it and its engine core
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.integration
@pytest.mark.slow
def test_a_distillation_request_against_vllms_openai_server(vllm_server, examples):
    example = next(e for e in examples if e["choices"] is None)
    # Behind the fault proxy: a 429 (Retry-After 1 s), then a 503, then vLLM's real answer.
    with FaultProxy(vllm_server, [Fault.rate_limit(1), Fault.error(503)]) as proxy:
        config = DistillConfig(teacher="openai", model="tiny", base_url=f"{proxy.url}/v1", max_tokens=32,
                               max_retries=3, timeout_s=120.0)
        teacher = make_teacher(config)
        answer = asyncio.run(teacher.generate(example))
        assert proxy.count == 3
    assert answer.ok, answer.error
    assert answer.text and answer.prompt_tokens > 16 and answer.completion_tokens > 0  # 16 image tokens
    outcome = distill_rows(example, answer, config)
    reason = outcome.rejected["reason"]  # random weights: garbage, never a right answer
    assert reason.startswith((NO_MARKER, "teacher answer wrong")), reason
    assert [r["mode"] for r in outcome.rows] == ["direct", "caption"]  # both from the ground truth
