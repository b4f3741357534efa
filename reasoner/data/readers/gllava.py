"""G-LLaVA's Geo170K (Gao et al. 2023): its QA tuning set and the GeoQA test set it evaluates on.

Layout read (the ``pipilurj/G-LLaVA`` README's ``playground/data/`` tree, filled from the
``Luckyjhg/Geo170K`` Hugging Face repository; its ``playground/data/test_questions.jsonl`` and
``test_answers.jsonl`` were checked)::

    <root>/qa_tuning.json              [{"image": "geoqa_plus/<n>.png", "conversations": [
                                         {"from": "human", "value": ...},
                                         {"from": "gpt", "value": ...}, ...]}, ...]
    <root>/test_questions.jsonl        {"question_id", "image": "test/<n>.png", "text"}
    <root>/test_answers.jsonl          {"question_id", "text": "<letter>"}
    <root>/images/{geo3k,geoqa_plus,test}/...   ``image`` paths are relative to images/

``<root>`` may also be the repository checkout (files under ``playground/data/``). The README
names the questions file ``test_question.jsonl``; both spellings are read. The turn format was
confirmed from the test file and from a published Geo170K QA record (a human turn
``<image>\\n<instruction>\\nQuestion: ...\\nChoices:\\nA: ...\\nB: ...``, a gpt turn of reasoning
ending ``Answer:C``), not from ``qa_tuning.json`` itself, which no stored source showed.

Rows: the text after ``Question:`` (the instruction line dropped) and the ``Choices:`` lines as
choices; the answer after the last ``Answer:`` of the gpt turn (the test answers file for test);
metric ``mc`` when there are choices, else ``exact``; the gpt turn before its ``Answer:`` line
as rationale (train only). Ids are ``gllava-train-<index in qa_tuning.json, 6 digits>`` (with
``-<k>`` for the k-th further question of a multi-turn record) and
``gllava-test-<question_id>``. Splits: train (qa_tuning.json) -> train, test (GeoQA) -> test.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import DatasetRoot, Rejected, check_split, complete, example

SPLITS = {"train": "train", "test": "test"}
_CHOICE = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])\s*[:.：])\s*(.*?)\s*$")  # "A: x", "(A) x"
_ANSWER = re.compile(r"Answer\s*[:：]\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_LETTER = re.compile(r"^\(?([A-Z])\)?\.?$")


def parse_question(text: str) -> tuple[str, list[str] | None]:
    """(question, choices or None) of a human turn; the instruction before ``Question:`` is
    dropped. A ``Choices:`` block whose lines are not ``A: ...``, ``B: ...`` in order gives
    an empty choice list (rejected downstream as bad choices)."""
    text = text.replace("<image>", "").strip()
    if "Question:" in text:
        text = text.split("Question:", 1)[1]
    question, marker, block = text.partition("\nChoices:")
    if not marker:
        return question.strip(), None
    lines = [line for line in block.splitlines() if line.strip()]
    matches = [_CHOICE.match(line) for line in lines]
    letters = [(m.group(1) or m.group(2)) if m else None for m in matches]
    if not lines or letters != [chr(ord("A") + i) for i in range(len(lines))]:
        return question.strip(), []
    return question.strip(), [m.group(3) for m in matches]


def parse_answer(text: str, choices: list[str] | None) -> tuple[str | None, str]:
    """(answer or None, rationale) of a gpt turn: the text after its last ``Answer:`` and the
    text before that line. With choices, an answer like "(C)" or "C." becomes "C"."""
    matches = list(_ANSWER.finditer(text))
    if not matches:
        return None, text.strip()
    answer = matches[-1].group(1).strip()
    letter = _LETTER.match(answer)
    if choices is not None and letter:
        answer = letter.group(1)
    return answer or None, text[:matches[-1].start()].strip()


def _pairs(conversations: list) -> list[tuple[str, str]]:
    """(human, gpt) turn pairs of a LLaVA conversation, in order."""
    turns = [(t.get("from"), t.get("value") or "") for t in conversations
             if isinstance(t, dict)]
    return [(h, g) for (hf, h), (gf, g) in zip(turns, turns[1:])
            if hf == "human" and gf == "gpt"]


def _row(id_: str, split: str, human: str, gpt: str) -> dict:
    question, choices = parse_question(human)
    answer, rationale = parse_answer(gpt, choices)
    return example("gllava", id_, split, question, [answer] if answer else [],
                   "mc" if choices is not None else "exact", choices=choices,
                   rationale=rationale)


def read_gllava(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                verify_images: bool = False) -> Iterator[dict | Rejected]:
    """G-LLaVA rows of ``split``: "train" (Geo170K QA tuning) or "test" (GeoQA test)."""
    schema_split = check_split("gllava", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="gllava", verify_images=verify_images)
    base = ds.find_base(["", "playground/data"],
                        "qa_tuning.json" if split == "train" else "test_answers.jsonl",
                        "G-LLaVA's playground/data/ (qa_tuning.json, test_questions.jsonl, "
                        "test_answers.jsonl, images/)")

    def images(image: object) -> list[str]:
        return [ds.path(base, "images", str(image)), ds.path(base, str(image))]

    if split == "train":
        for index, record in enumerate(ds.read_list(ds.path(base, "qa_tuning.json"))):
            pairs = _pairs(record.get("conversations") or []) or [("", "")]
            for k, (human, gpt) in enumerate(pairs):
                row = _row(f"gllava-train-{index:06d}{f'-{k}' if k else ''}", schema_split,
                           human, gpt)
                yield complete(row, ds, images(record.get("image")))
        return
    answers = {a.get("question_id"): a.get("text") or ""
               for a in ds.read_jsonl(ds.path(base, "test_answers.jsonl"))}
    questions = ds.read_jsonl(ds.find_file(
        [posixpath.join(base, n) for n in ("test_questions.jsonl", "test_question.jsonl")],
        "G-LLaVA's test_questions.jsonl"))
    for q in questions:
        qid = q.get("question_id")
        row = _row(f"gllava-test-{qid}", schema_split, q.get("text") or "",
                   f"Answer: {answers[qid]}" if qid in answers else "")
        yield complete(row, ds, images(q.get("image")))
