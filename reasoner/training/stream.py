"""Artifacts read a batch at a time, and training data as a memory-mapped Arrow file.

No process of the training stages holds a whole ``sft_data`` or ``pairs`` artifact: the checks on
the driver, the reference pass and each worker's dataset read it through :func:`iter_artifact`,
a few rows at a time, in one fixed order (parts sorted by name, rows in part order), each batch
tagged with its part and its row's index in the artifact, so an error names the row.

A training worker writes the rows it trains on once to a local Arrow file (:func:`arrow_dataset`,
the Arrow streaming format that ``datasets`` memory-maps) and trains on ``datasets.Dataset.from_file``
of it: a map-style dataset whose rows are read from the page cache on access. That keeps what the
HF Trainer and TRL rely on of a ``Dataset`` (its length, the seeded sampler, the resume that skips
the batches a checkpoint already saw), while the process's own memory stays the size of a batch.

How few rows a read holds depends on how the part was written: Parquet keeps a column chunk's
values in pages, and a reader decodes a page whole. ``pyarrow.parquet.write_table``'s defaults (what
``RunDir.write_part`` uses) put up to 1024 values in a page and dictionary-encode binary columns (a
part's distinct images in one dictionary page), so with the parts the stages write today a read
holds one part's images at a time (about three copies while it decodes them, and the last batch
of the part before while the caller still holds it): memory bounded by the size of a part, a
stage's unit of work, not by the artifact. Parts written with small pages (``write_batch_size``)
and no dictionary on the image column would be read a batch at a time (:data:`READ_BUFFER` makes
the reader stream pages).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from reasoner.rundir import RunDir, RunDirError
from reasoner.schema import SchemaError, validate_table

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

BATCH_ROWS = 64
"""Rows a read holds (images included): the unit of every streamed check and copy."""
READ_BUFFER = 1 << 20
"""Bytes the Parquet reader buffers per column chunk (it streams pages instead of reading a chunk whole)."""
DATA_FILE = "data.arrow"


@dataclass(frozen=True)
class Batch:
    """Rows of an artifact: ``rows`` (a record batch, or a table once validated) from part
    ``part``, the first of them the ``start``-th row of the artifact in reading order."""

    part: str
    start: int
    rows: pa.RecordBatch | pa.Table


def artifact_parts(run: RunDir, artifact: str, *, require_complete: bool = True) -> list[str]:
    """The Parquet parts of ``artifact`` in reading order; the errors of ``RunDir.read_table`` if
    it is missing, incomplete or has no parts."""
    if require_complete:
        run.require(artifact)
    parts = run.parts(artifact)
    if not parts:
        raise RunDirError(f"{run.path(artifact)} holds no Parquet parts: the stage that makes {artifact!r} "
                          "wrote nothing")
    return parts


def iter_artifact(run: RunDir, artifact: str, columns: Sequence[str] | None = None, *,
                  batch_rows: int = BATCH_ROWS, require_complete: bool = True) -> Iterator[Batch]:
    """The rows of ``artifact`` (``columns`` only, if given), ``batch_rows`` at a time, in reading order."""
    start = 0
    for part in artifact_parts(run, artifact, require_complete=require_complete):
        with run.fs.open_input_file(run.path(artifact, part)) as handle:
            reader = pq.ParquetFile(handle, buffer_size=READ_BUFFER, pre_buffer=False)
            missing = [c for c in columns or () if c not in reader.schema_arrow.names]
            if missing:
                raise SchemaError(artifact, f"missing required column(s) {missing} in {part}; it has "
                                  f"{reader.schema_arrow.names}", missing[0])
            for rows in reader.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None,
                                            use_threads=False):
                yield Batch(part, start, rows)
                start += rows.num_rows


def validated(batches: Iterable[Batch], schema_name: str) -> Iterator[Batch]:
    """``batches`` checked against (and cast to) the artifact's schema; a :class:`SchemaError`
    names the row by its index in the artifact. ``(id, pair_index)`` uniqueness is checked within
    a batch here; across batches see :class:`KeyCheck`."""
    for batch in batches:
        try:
            table = validate_table(batch.rows, schema_name)
        except SchemaError as e:
            row = None if e.row is None else batch.start + e.row
            raise SchemaError(e.artifact, f"{e.problem} (in {batch.part})", e.column, row, e.row_id) from e
        yield Batch(batch.part, batch.start, table)


class KeyCheck:
    """Called on every batch of an artifact: a :class:`SchemaError` naming the row where an
    ``(id, pair_index)`` comes a second time. Holds the keys seen (a few dozen bytes a row)."""

    def __init__(self, artifact: str) -> None:
        self.artifact, self.seen = artifact, set()

    def __call__(self, batch: Batch) -> None:
        ids, indices = batch.rows.column("id").to_pylist(), batch.rows.column("pair_index").to_pylist()
        for k, key in enumerate(zip(ids, indices)):
            if key in self.seen:
                raise SchemaError(self.artifact, f"(id, pair_index) {key} appears twice (in {batch.part})",
                                  "pair_index", batch.start + k, key[0])
            self.seen.add(key)


def arrow_dataset(batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema, directory: str) -> Dataset:
    """A ``datasets.Dataset`` memory-mapped from ``<directory>/data.arrow``, which this writes from
    ``batches`` (their ``schema`` columns, cast to it) one batch at a time."""
    from datasets import Dataset

    path = os.path.join(directory, DATA_FILE)
    rows = 0
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if table.num_rows:
                writer.write_table(table.select(schema.names).cast(schema))
                rows += table.num_rows
    logger.info("training data: %d rows in %s (%.1f MiB, memory-mapped)", rows, path, os.path.getsize(path) / 2**20)
    return Dataset.from_file(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def scratch_directory(cache_dir: str, prefix: str) -> Iterator[str]:
    """A fresh directory under ``<cache_dir>/datasets`` (a worker's training data), removed afterwards.

    Under the job's cache directory rather than the system's temporary one, which may be a RAM
    disk: the file is there to keep the data out of memory. Its name holds the host and the
    process id, so a worker that was killed before it could remove its directory leaves it to the
    next worker on the host, which removes it.
    """
    root = os.path.join(os.path.expanduser(cache_dir), "datasets")
    os.makedirs(root, exist_ok=True)
    host = socket.gethostname()
    for name in os.listdir(root):
        owner = re.fullmatch(rf"[\w.-]+?--{re.escape(host)}--(\d+)-\w+", name)
        if owner is not None and not _alive(int(owner.group(1))):
            logger.info("removing %s, left by a worker that stopped", os.path.join(root, name))
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    directory = tempfile.mkdtemp(prefix=f"{prefix}--{host}--{os.getpid()}-", dir=root)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
