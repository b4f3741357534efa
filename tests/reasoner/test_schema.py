"""Tests of reasoner.schema: the artifacts' Arrow schemas and their validation."""

from __future__ import annotations

import json
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reasoner.schema import (
    CANDIDATES,
    EXAMPLES,
    SCHEMA_VERSION,
    SCHEMAS,
    SchemaError,
    rejected_row,
    row_problem,
    validate_rows,
    validate_table,
)


def example(i: int, **overrides) -> dict:
    row = {
        "id": f"ex-{i}", "source": "synthetic", "split": "train", "image": b"\x89PNG fake",
        "question": f"What is {i} + 1?", "choices": None, "answers": [str(i + 1)],
        "metric": "exact", "rationale": None,
    }
    row.update(overrides)
    return row


def candidate(**overrides) -> dict:
    row = {
        "id": "ex-0", "sample_index": 0, "prompt": "p", "text": "t\n### Answer: 1",
        "answer": "1", "score": 1.0, "correct": True, "num_tokens": 7,
        "cumulative_logprob": -3.5,
    }
    row.update(overrides)
    return row


def pair(**overrides) -> dict:
    row = {
        "id": "ex-0", "pair_index": 0, "prompt": "p", "image": b"img", "chosen": "c",
        "rejected": "r", "accuracy": 0.5,
    }
    row.update(overrides)
    return row


def test_schemas_cover_every_artifact_with_the_listed_columns():
    assert SCHEMA_VERSION == 1
    assert set(SCHEMAS) == {"examples", "sft_data", "candidates", "pairs", "dpo_ref", "rejected"}
    assert EXAMPLES.names == ["id", "source", "split", "image", "question", "choices", "answers",
                              "metric", "rationale", "caption"]
    assert SCHEMAS["sft_data"].names == ["id", "image", "prompt", "completion", "mode"]
    assert SCHEMAS["pairs"].names == ["id", "pair_index", "prompt", "image", "chosen",
                                      "rejected", "accuracy"]
    assert SCHEMAS["dpo_ref"].names == ["id", "pair_index", "chosen_ref_logp",
                                        "rejected_ref_logp"]
    assert SCHEMAS["rejected"].names == ["id", "stage", "reason", "record"]
    assert EXAMPLES.field("choices").type == pa.list_(pa.string())
    assert EXAMPLES.field("choices").nullable and not EXAMPLES.field("answers").nullable
    assert CANDIDATES.field("sample_index").type == pa.int32()
    assert CANDIDATES.field("answer").nullable and not CANDIDATES.field("score").nullable
    assert SCHEMAS["rejected"].field("record").nullable


def test_good_table_passes_and_is_cast_with_extra_columns_kept_last():
    table = pa.table({
        "extra": pa.array([10, 20], pa.int64()),
        "id": pa.array(["ex-0", "ex-1"], pa.large_string()),
        "sample_index": pa.array([0, 1], pa.int64()),
        "prompt": ["p", "p"], "text": ["a", "b"], "answer": ["1", None],
        "score": pa.array([1, 0], pa.int64()),  # integers are cast to float64
        "correct": [True, False],
        "num_tokens": pa.array([5, 6], pa.int16()),
        "cumulative_logprob": pa.array([-1.5, -2.0], pa.float32()),
    })
    out = validate_table(table, "candidates")
    assert out.column_names == CANDIDATES.names + ["extra"]
    assert out.schema.field("id").type == pa.string()
    assert out.schema.field("sample_index").type == pa.int32()
    assert out.schema.field("score").type == pa.float64()
    assert out.schema.field("num_tokens").type == pa.int32()
    assert out.column("score").to_pylist() == [1.0, 0.0]
    assert out.column("answer").to_pylist() == ["1", None]
    assert out.column("extra").to_pylist() == [10, 20]
    assert out.schema.metadata[b"reasoner.artifact"] == b"candidates"


def test_validate_rows_builds_examples_and_roundtrips_through_parquet(tmp_path):
    rows = [example(0), example(1, choices=["red", "blue"], metric="mc", answers=["B"],
                                 rationale="Step.\n### Answer: B")]
    table = validate_rows(rows, "examples")
    assert table.num_rows == 2
    assert table.schema.field("choices").type == pa.list_(pa.string())
    assert table.column("choices").to_pylist() == [None, ["red", "blue"]]
    pq.write_table(table, tmp_path / "part.parquet")
    again = validate_table(pq.read_table(tmp_path / "part.parquet"), "examples")
    assert again.to_pylist() == table.to_pylist()


def test_missing_column_is_named():
    table = validate_rows([example(0)], "examples").drop_columns(["metric"])
    with pytest.raises(SchemaError, match=r"'examples'.*column 'metric'.*missing"):
        validate_table(table, "examples")


def test_null_in_non_nullable_column_names_row_and_id():
    table = pa.table({"id": ["a", "b"], "pair_index": [0, 1],
                      "chosen_ref_logp": [-1.0, None], "rejected_ref_logp": [-2.0, -3.0]})
    with pytest.raises(SchemaError) as info:
        validate_table(table, "dpo_ref")
    message = str(info.value)
    assert "row 1 (id 'b')" in message and "'chosen_ref_logp'" in message and "null" in message
    assert (info.value.row, info.value.row_id, info.value.column) == (1, "b", "chosen_ref_logp")


def test_bad_metric_in_row_3_names_the_row_id_and_value():
    rows = [example(0), example(1), example(2), example(3, metric="bleu")]
    with pytest.raises(SchemaError) as info:
        validate_rows(rows, "examples")
    assert str(info.value) == (
        "artifact 'examples', row 3 (id 'ex-3'), column 'metric': "
        "'bleu' is not one of relaxed, vqa, anls, mc, exact, aokvqa")


def test_empty_answers_are_refused():
    with pytest.raises(SchemaError, match=r"row 1 \(id 'ex-1'\), column 'answers': is empty"):
        validate_rows([example(0), example(1, answers=[])], "examples")


@pytest.mark.parametrize(("name", "row", "expected"), [
    ("examples", example(0, split="dev"), "column 'split': 'dev' is not one of train, val, test"),
    ("examples", example(0, answers=["1", None]), "column 'answers': ['1', None] holds a null"),
    ("examples", example(0, image="data:image/png;base64,AAAA"), "column 'image': is a str"),
    ("examples", {"id": "x"}, "column 'source': missing required key"),
    ("sft_data", {"id": "a", "image": b"i", "prompt": "p", "completion": "c", "mode": "greedy"},
     "column 'mode': 'greedy' is not one of cot, direct"),
    ("candidates", candidate(score=1.5), "column 'score': 1.5 is outside [0, 1]"),
    ("candidates", candidate(score=float("nan")), "column 'score': nan is outside [0, 1]"),
    ("candidates", candidate(num_tokens=-1), "column 'num_tokens': -1 is negative"),
    ("candidates", candidate(num_tokens=2**40), "column 'num_tokens': cannot cast to int32"),
    ("candidates", candidate(correct="yes"), "column 'correct': has type string"),
    ("pairs", pair(accuracy=-0.1), "column 'accuracy': -0.1 is outside [0, 1]"),
])
def test_row_problem_gives_the_reason(name, row, expected):
    problem = row_problem(row, name)
    assert problem is not None and problem.startswith(expected), problem


def test_row_problem_is_none_for_good_rows():
    assert row_problem(example(0), "examples") is None
    assert row_problem(candidate(answer=None, score=0), "candidates") is None
    assert row_problem(example(0, split="test", metric="anls", note="extra"), "examples") is None


def test_pairs_key_must_be_unique():
    with pytest.raises(SchemaError, match=r"row 2 \(id 'ex-0'\).*duplicate key"):
        validate_rows([pair(), pair(pair_index=1), pair()], "pairs")


def test_mixed_types_in_a_column_name_the_row():
    with pytest.raises(SchemaError, match=r"row 1 \(id 'ex-1'\), column 'question'"):
        validate_rows([example(0), example(1, question=7)], "examples")


def test_rejected_rows_record_json_without_binary_and_allow_missing_id():
    row = rejected_row(example(5), "distill", "teacher error")
    assert row["id"] == "ex-5" and row["stage"] == "distill"
    record = json.loads(row["record"])
    assert "image" not in record and record["question"] == "What is 5 + 1?"
    table = validate_rows([row, {"id": None, "stage": "sample", "reason": "no id"}], "rejected")
    assert table.column("id").to_pylist() == ["ex-5", None]
    assert table.column("record").to_pylist()[1] is None
    bare = validate_table(pa.table({"id": ["a"], "stage": ["s"], "reason": ["r"]}), "rejected")
    assert bare.column_names == ["id", "stage", "reason", "record"]


def test_empty_rows_give_an_empty_table_and_unknown_names_are_refused():
    assert validate_rows([], "pairs").schema.equals(SCHEMAS["pairs"])
    with pytest.raises(ValueError, match="unknown artifact 'example'"):
        validate_rows([], "example")


def test_schema_error_pickles_and_is_a_value_error():
    error = SchemaError("pairs", "is null", "chosen", 4, "ex-9")
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, ValueError)
    assert str(again) == "artifact 'pairs', row 4 (id 'ex-9'), column 'chosen': is null"
    assert again.reason == "column 'chosen': is null"
