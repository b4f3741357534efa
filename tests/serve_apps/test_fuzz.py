"""Fuzzing the served API with schemathesis, from its own OpenAPI document (which states the caps).

The limited app (``conftest.LIMITED``: small caps, API keys, a 3 s timeout, one-request queues) is
sent generated requests to every operation of its document: none may be answered 5xx but the answers
of overload (503 for a full queue, 504 for a timeout), and every response must conform to the
document (a documented status code, its content type, body schema and headers). Two kinds:

- invalid (schemathesis' negative mode) for the POST routes, from the document as served;
- valid (positive mode), from the document with tighter maxima (n <= 4, max_tokens <= 16: the
  limited app's caps leave room for its timeout test's 64 x 480 tokens, which would make a fuzz run
  of engine work) and the served model's name; half of them carry a real image and question, so
  that they reach the engines with generated strategies, sampling settings and beam sizes (a
  generated ``data:`` URL is never an image).

``REASONER_FUZZ_EXAMPLES`` (default 170) cases per operation and kind: 6 x 170 + the 2 GET routes,
1,022 requests, about a minute here::

    REASONER_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/serve_apps/test_fuzz.py -s
"""

from __future__ import annotations

import collections
import copy
import itertools
import os

import pytest
import requests

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serve_apps.conftest import LIMITED_KEYS, MESSAGES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = int(os.environ.get("REASONER_FUZZ_EXAMPLES", "170"))
CHECKS = (status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance)
# Valid requests' maxima (within the limited app's caps).
TIGHTER = {"n": 4, "max_tokens": 16, "max_completion_tokens": 16}


def served_at(document: dict, base_url: str) -> dict:
    """A copy of ``document`` whose server is ``base_url``."""
    return {**copy.deepcopy(document), "servers": [{"url": base_url}]}


def tighter(document: dict, base_url: str) -> dict:
    """The served document with ``TIGHTER`` maxima and ``model`` the served name, served at ``base_url``."""
    document = served_at(document, base_url)
    for model in document["components"]["schemas"].values():
        for name, field in model.get("properties", {}).items():
            for branch in [field, *field.get("anyOf", [])]:
                if branch.get("type") == "integer" and name in TIGHTER:
                    branch["maximum"] = TIGHTER[name]
                if branch.get("type") == "string" and name == "model":
                    branch["enum"] = ["reasoner"]
    return document


def with_messages(case, real: bool):
    """``case`` with a real image and question in place of its generated messages, if ``real``."""
    if real and isinstance(case.body, dict) and "messages" in case.body:
        case.body["messages"] = copy.deepcopy(MESSAGES)
    return case


def test_generated_requests_get_no_5xx_and_conform(limited_url):
    # schemathesis' own pytest integration (schemathesis.pytest.from_fixture) fails on pytest 9
    # (it sets Function._nodeid): its strategies are driven with Hypothesis here.
    served = requests.get(f"{limited_url}/openapi.json", timeout=30).json()
    schemas = {GenerationMode.NEGATIVE: schemathesis.openapi.from_dict(served_at(served, limited_url)),
               GenerationMode.POSITIVE: schemathesis.openapi.from_dict(tighter(served, limited_url))}
    for schema in schemas.values():
        schema.config.update(base_url=limited_url)
    keys = itertools.cycle(LIMITED_KEYS)  # two keys: each within its rate most of the time
    sent: collections.Counter = collections.Counter()
    failures: list[str] = []
    for mode, schema in schemas.items():
        for operation in (result.ok() for result in schema.get_all_operations()):
            if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
                continue  # nothing to get wrong in a GET without parameters
            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE:
                strategy = st.tuples(strategy, st.booleans()).map(lambda pair: with_messages(*pair))

            # No shrinking: a failure is reported as found (with its request), without minutes of search.
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                      derandomize=True, print_blob=True, phases=[Phase.explicit, Phase.generate])
            @given(case=strategy)
            def fuzz(case):
                response = case.call(headers={"Authorization": f"Bearer {next(keys)}"}, timeout=60)
                sent[response.status_code] += 1
                # 503 (queue full) and 504 (timeout) answer overload; any other 5xx fails.
                assert response.status_code < 500 or response.status_code in (503, 504), (
                    f"{case.method} {case.path}: {response.status_code} {response.text[:500]}")
                case.validate_response(response, checks=CHECKS)

            try:
                fuzz()
            except Exception as e:  # noqa: BLE001 - collect every operation's failure, then fail once
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {e}")
    total = sum(sent.values())
    print(f"\nfuzz: {total} requests, by status {dict(sorted(sent.items()))}")
    assert not failures, "\n\n".join(failures)
    assert total >= 6 * EXAMPLES, sent
