"""The Arrow schemas of every artifact, and their validation (DESIGN.md, "Artifacts").

Each stage reads and writes Parquet with one of the schemas below. A schema lists the columns
every reader can count on; a stage may add more columns, which validation keeps after the listed
ones. ``validate_table`` / ``validate_rows`` check a whole table and raise ``SchemaError`` at the
first problem; ``row_problem`` runs the same checks on one row and returns the reason instead, so
a stage can divert unusable rows to ``<run>/rejected/<stage>/`` (see ``rejected_row``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 1

SPLITS = ("train", "val", "test")
METRICS = ("relaxed", "vqa", "anls", "mc", "exact", "aokvqa")
MODES = ("cot", "direct", "caption")  # of sft_data rows (prompts.MODES are the answering ones)


def _schema(name: str, *fields: pa.Field) -> pa.Schema:
    meta = {"reasoner.artifact": name, "reasoner.schema_version": str(SCHEMA_VERSION)}
    return pa.schema(list(fields), metadata=meta)


def _f(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


_STR_LIST = pa.list_(pa.string())

EXAMPLES = _schema(
    "examples",
    _f("id", pa.string()), _f("source", pa.string()), _f("split", pa.string()),
    _f("image", pa.binary()), _f("question", pa.string()),
    _f("choices", _STR_LIST, nullable=True), _f("answers", _STR_LIST),
    _f("metric", pa.string()), _f("rationale", pa.string(), nullable=True),
    _f("caption", pa.string(), nullable=True),
)
SFT_DATA = _schema(
    "sft_data",
    _f("id", pa.string()), _f("image", pa.binary()), _f("prompt", pa.string()),
    _f("completion", pa.string()), _f("mode", pa.string()),
)
CANDIDATES = _schema(
    "candidates",
    _f("id", pa.string()), _f("sample_index", pa.int32()), _f("prompt", pa.string()),
    _f("text", pa.string()), _f("answer", pa.string(), nullable=True), _f("score", pa.float64()),
    _f("correct", pa.bool_()), _f("num_tokens", pa.int32()),
    _f("cumulative_logprob", pa.float64()),
)
PAIRS = _schema(
    "pairs",
    _f("id", pa.string()), _f("pair_index", pa.int32()), _f("prompt", pa.string()),
    _f("image", pa.binary()), _f("chosen", pa.string()), _f("rejected", pa.string()),
    _f("accuracy", pa.float64()),
)
DPO_REF = _schema(
    "dpo_ref",
    _f("id", pa.string()), _f("pair_index", pa.int32()),
    _f("chosen_ref_logp", pa.float64()), _f("rejected_ref_logp", pa.float64()),
)
# `id` is nullable here: a row may be rejected precisely because it has none.
REJECTED = _schema(
    "rejected",
    _f("id", pa.string(), nullable=True), _f("stage", pa.string()), _f("reason", pa.string()),
    _f("record", pa.string(), nullable=True),
)

SCHEMAS: dict[str, pa.Schema] = {
    "examples": EXAMPLES, "sft_data": SFT_DATA, "candidates": CANDIDATES,
    "pairs": PAIRS, "dpo_ref": DPO_REF, "rejected": REJECTED,
}

# Columns of a schema that a table may omit; validation fills them with nulls.
_OPTIONAL: dict[str, frozenset[str]] = {"examples": frozenset({"caption"}), "rejected": frozenset({"record"})}
_ENUMS: dict[str, tuple[str, ...]] = {"split": SPLITS, "metric": METRICS, "mode": MODES}
_UNIT_INTERVAL = ("score", "accuracy")  # fractions in [0, 1]
_NON_NEGATIVE = ("sample_index", "pair_index", "num_tokens")
_UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "pairs": ("id", "pair_index"), "dpo_ref": ("id", "pair_index"),
}


class SchemaError(ValueError):
    """An artifact's table or row breaks its schema; says which column, row and id, and why."""

    def __init__(self, artifact: str, problem: str, column: str | None = None,
                 row: int | None = None, row_id: Any = None) -> None:
        self.artifact, self.problem, self.column = artifact, problem, column
        self.row, self.row_id = row, row_id
        where = [f"artifact {artifact!r}"]
        if row is not None:
            where.append(f"row {row}" + (f" (id {row_id!r})" if row_id is not None else ""))
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {problem}")

    def __reduce__(self):  # keep it picklable across Ray workers
        return type(self), (self.artifact, self.problem, self.column, self.row, self.row_id)

    @property
    def reason(self) -> str:
        """The problem without the artifact and row: what a rejected row records."""
        return f"column {self.column!r}: {self.problem}" if self.column else self.problem


def _schema_for(name: str) -> pa.Schema:
    if name not in SCHEMAS:
        raise ValueError(f"unknown artifact {name!r}; expected one of {sorted(SCHEMAS)}")
    return SCHEMAS[name]


_T = pa.types
_KINDS = (  # (kind, predicates): casts stay within a kind
    ("string", (_T.is_string, _T.is_large_string, _T.is_string_view)),
    ("binary", (_T.is_binary, _T.is_large_binary, _T.is_binary_view, _T.is_fixed_size_binary)),
    ("bool", (_T.is_boolean,)), ("int", (_T.is_integer,)), ("float", (_T.is_floating,)),
    ("null", (_T.is_null,)),
)
_LISTS = (_T.is_list, _T.is_large_list, _T.is_fixed_size_list, _T.is_list_view,
          _T.is_large_list_view)


def _kind(t: pa.DataType) -> str:
    """The family of a type: casts are allowed within a family (and from null), never across."""
    if _T.is_dictionary(t):
        return _kind(t.value_type)
    if any(is_list(t) for is_list in _LISTS):
        return f"list<{_kind(t.value_type)}>"
    return next((kind for kind, preds in _KINDS if any(p(t) for p in preds)), str(t))


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    src, dst = _kind(source), _kind(target)
    return (src in (dst, "null") or (src, dst) == ("int", "float")
            or (dst.startswith("list<") and src == "list<null>"))


def _first(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """Index of the first true value of a boolean mask (nulls count as false), or None."""
    index = pc.index(pc.fill_null(mask, False), True).as_py()
    return None if index < 0 else index


def _id_getter(table: pa.Table) -> Callable[[int | None], Any]:
    """A function from row index to the row's id (None without a string ``id`` column)."""
    if "id" not in table.column_names or _kind(table.schema.field("id").type) != "string":
        return lambda row: None
    ids = table.column("id")
    return lambda row: None if row is None else ids[row].as_py()


def _cast(column: pa.ChunkedArray, field: pa.Field, name: str,
          id_of: Callable[[int | None], Any]) -> pa.ChunkedArray:
    def fail(problem: str, row: int | None = None) -> SchemaError:
        return SchemaError(name, problem, field.name, row, id_of(row))

    if not _castable(column.type, field.type):
        raise fail(f"has type {column.type}, not castable to {field.type}")
    try:
        return column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        for row in range(len(column)):  # error path only: find the offending row
            try:
                column[row].cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as row_error:
                raise fail(f"cannot cast to {field.type}: {row_error}", row) from e
        raise fail(f"cannot cast {column.type} to {field.type}: {e}") from e


def _row_checks(column: pa.ChunkedArray, field: pa.Field) -> list[tuple[int | None, Any]]:
    """(first bad row or None, description of the problem given its value) for a cast column."""
    checks: list[tuple[int | None, Any]] = []
    if not field.nullable:
        checks.append((_first(pc.is_null(column)), lambda v: "is null in a non-nullable column"))
    if field.name in _ENUMS:
        allowed = _ENUMS[field.name]
        bad = pc.invert(pc.is_in(column, value_set=pa.array(allowed)))
        checks.append((_first(bad), lambda v, a=allowed: f"{v!r} is not one of {', '.join(a)}"))
    if field.name in _UNIT_INTERVAL:
        ok = pc.and_(pc.greater_equal(column, 0.0), pc.less_equal(column, 1.0))
        checks.append((_first(pc.invert(ok)), lambda v: f"{v!r} is outside [0, 1]"))
    if field.name in _NON_NEGATIVE:
        checks.append((_first(pc.less(column, 0)), lambda v: f"{v!r} is negative"))
    if field.name == "answers":
        checks.append((_first(pc.equal(pc.list_value_length(column), 0)),
                       lambda v: "is empty: an example needs at least one accepted answer"))
    if _kind(field.type).startswith("list<"):
        parents = pc.filter(pc.list_parent_indices(column), pc.is_null(pc.list_flatten(column)))
        checks.append((pc.min(parents).as_py(), lambda v: f"{v!r} holds a null entry"))
    return checks


def _check_unique(table: pa.Table, name: str, id_of: Callable[[int | None], Any]) -> None:
    keys = _UNIQUE_KEYS.get(name)
    if not keys:
        return
    seen: set[tuple] = set()
    for row, key in enumerate(zip(*(table.column(k).to_pylist() for k in keys))):
        if key in seen:
            problem = f"duplicate key {dict(zip(keys, key))}: ({', '.join(keys)}) must be unique"
            raise SchemaError(name, problem, None, row, id_of(row))
        seen.add(key)


def validate_table(table: pa.Table, name: str) -> pa.Table:
    """Check ``table`` against artifact ``name``'s schema and return it cast to that schema.

    Checks: the schema's columns exist with cast-compatible types (same type family: strings,
    binaries, integers, floats (from integers too), booleans, lists of those); non-nullable
    columns hold no nulls; ``split``, ``metric`` and ``mode`` hold allowed values; ``answers``
    is non-empty; lists hold no null entries; ``score`` and ``accuracy`` lie in [0, 1]; indices
    and token counts are non-negative; ``(id, pair_index)`` is unique in pairs and dpo_ref.

    Returns:
        The schema's columns, cast and in schema order, then any extra columns unchanged.
        Optional columns (``caption`` of examples, ``record`` of rejected) that are absent are
        filled with nulls.

    Raises:
        SchemaError: at the first problem, naming the artifact, column, row index and id.
    """
    schema = _schema_for(name)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise TypeError(f"validate_table expects a pyarrow.Table, got {type(table).__name__}")
    missing = [f.name for f in schema if f.name not in table.column_names
               and f.name not in _OPTIONAL.get(name, ())]
    if missing:
        raise SchemaError(name, f"missing required column(s) {missing}; "
                                f"the table has {table.column_names}", missing[0])
    id_of = _id_getter(table)
    columns: list[pa.ChunkedArray] = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, field.type)]))
            continue
        column = _cast(table.column(field.name), field, name, id_of)
        for row, describe in _row_checks(column, field):
            if row is not None:
                value = None if _kind(field.type) == "binary" else column[row].as_py()
                raise SchemaError(name, describe(value), field.name, row, id_of(row))
        columns.append(column)
    extra = [f for f in table.schema if f.name not in schema.names]
    out = pa.Table.from_arrays(columns + [table.column(f.name) for f in extra],
                               schema=pa.schema(list(schema) + extra, metadata=schema.metadata))
    _check_unique(out, name, id_of)
    return out


def _infer(values: list, column: str, name: str, rows: list[dict]) -> pa.Array:
    """Build an Arrow array from python values, naming the first row whose type does not fit."""
    def fail(problem: str, row: int | None) -> SchemaError:
        row_id = rows[row].get("id") if row is not None else None
        return SchemaError(name, problem, column, row, row_id)

    field = _schema_for(name).field(column) if column in _schema_for(name).names else None
    if field is not None and _kind(field.type) == "binary":
        for row, value in enumerate(values):
            if isinstance(value, str):
                raise fail("is a str; expected bytes", row)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        first_kind = None
        for row, value in enumerate(values):  # error path only: find the offending row
            try:
                kind = _kind(pa.array([value]).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as row_error:
                raise fail(f"value {value!r} has no Arrow type: {row_error}", row) from e
            if kind == "null":
                continue
            first_kind = first_kind or kind
            if kind != first_kind and {kind, first_kind} != {"int", "float"}:
                raise fail(f"value {value!r} ({kind}) mixes with earlier {first_kind} "
                           "values", row) from e
        raise fail(f"values have no common Arrow type: {e}", None) from e


def validate_rows(rows: list[dict], name: str) -> pa.Table:
    """Build artifact ``name``'s table from python dicts and validate it (``validate_table``).

    Every row must have every required key (extra keys become extra columns, null where a row
    lacks them). Raises ``SchemaError`` naming the row, its id and the problem.
    """
    schema = _schema_for(name)
    optional = _OPTIONAL.get(name, frozenset())
    names: dict[str, None] = {f.name: None for f in schema}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SchemaError(name, f"is a {type(row).__name__}, not a dict", None, index)
        for field in schema:
            if field.name not in row and field.name not in optional:
                raise SchemaError(name, "missing required key", field.name, index, row.get("id"))
        names.update(dict.fromkeys(row))
    if not rows:
        return validate_table(schema.empty_table(), name)
    arrays = {
        column: _infer([row.get(column) for row in rows], column, name, rows)
        for column in names if column not in optional or any(column in row for row in rows)
    }
    return validate_table(pa.table(arrays), name)


def row_problem(row: dict, name: str) -> str | None:
    """Why ``row`` cannot be used as artifact ``name``'s row, or None if it can.

    Runs exactly the checks of ``validate_rows`` on the one row; the reason names the column.
    """
    try:
        validate_rows([row], name)
    except SchemaError as e:
        return e.reason
    return None


def rejected_row(row: dict, stage: str, reason: str) -> dict:
    """A row of the ``rejected`` artifact for an unusable input ``row``.

    ``record`` is the row as JSON without its binary fields (non-JSON values become strings).
    """
    kept = {k: v for k, v in row.items() if not isinstance(v, (bytes, bytearray, memoryview))}
    row_id = row.get("id")
    return {
        "id": None if row_id is None else str(row_id),
        "stage": stage,
        "reason": reason,
        "record": json.dumps(kept, default=str, ensure_ascii=False, sort_keys=True),
    }
