"""Run directories on local disk and on S3 (moto's server on 127.0.0.1): parts, manifests,
config mismatch refusal, rejected rows, parts that commit their rows and rejections together (failed
at each step by the fault switch), and stages left incomplete with inputs pending."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from reasoner.faults import Fault, InjectedFault
from reasoner.faults import parse as parse_faults
from reasoner.rundir import MANIFEST, ConfigMismatchError, RunDir, RunDirError, StageCounts, batch_part_name
from reasoner.schema import SchemaError


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", access_key="testing",
                           secret_key="testing", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("runs")
    yield f"{host}:{port}", fs
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(params=["local", "s3"])
def run(request, tmp_path) -> RunDir:
    if request.param == "local":
        return RunDir(str(tmp_path / "run"))
    _, fs = request.getfixturevalue("s3_server")
    return RunDir(f"runs/{request.node.name.replace('[', '-').rstrip(']')}-{os.getpid()}", filesystem=fs)


def _examples(ids: list[str]) -> pa.Table:
    return pa.Table.from_pylist([
        {"id": i, "source": "t", "split": "train", "image": b"png", "question": "q?", "choices": None,
         "answers": ["1"], "metric": "exact", "rationale": None} for i in ids])


def test_stage_lifecycle(run: RunDir) -> None:
    config, h = {"n": 2}, "h1"
    assert run.begin("examples", config, h) is True
    assert not run.is_complete("examples")
    with pytest.raises(RunDirError, match="incomplete"):
        run.read_table("examples")
    run.write_part("examples", "part-00001", _examples(["c", "d"]), schema_name="examples")
    run.write_part("examples", "part-00000", _examples(["a", "b"]), schema_name="examples")
    assert run.parts("examples") == ["part-00000.parquet", "part-00001.parquet"]
    assert run.read_table("examples", require_complete=False).column("id").to_pylist() == ["a", "b", "c", "d"]
    manifest = run.finish("examples", stage="make_examples", config=config, config_hash=h,
                          counts=StageCounts(in_=4, out=4), seed=7, timings={"generate": 1.5})
    assert run.manifest("examples") == manifest
    assert manifest["counts"] == {"in": 4, "out": 4, "rejected": 0}
    assert manifest["config"] == config and manifest["config_hash"] == h and manifest["seed"] == 7
    assert manifest["schema_version"] == 1 and "pyarrow" in manifest["packages"]
    assert manifest["started"] and manifest["finished"]
    assert run.is_complete("examples", h)
    # A complete artifact: begin says there is nothing to do; the manifest is invisible to readers.
    assert run.begin("examples", config, h) is False
    table = run.read_table("examples", schema_name="examples")
    assert table.num_rows == 4 and table.schema.field("answers").type == pa.list_(pa.string())


def test_other_config_is_refused_unless_overwrite(run: RunDir) -> None:
    run.begin("sft_data", {"a": 1}, "h1")
    run.write_part("sft_data", "part-00000", pa.table({"x": [1]}))
    with pytest.raises(ConfigMismatchError, match="was started with another config.*overwrite=true"):
        run.begin("sft_data", {"a": 2}, "h2")
    run.finish("sft_data", stage="distill", config={"a": 1}, config_hash="h1", counts=StageCounts(1, 1))
    with pytest.raises(ConfigMismatchError, match="was made with another config"):
        run.begin("sft_data", {"a": 2}, "h2")
    with pytest.raises(ConfigMismatchError):
        run.is_complete("sft_data", "h2")
    rejected = run.rejected("distill")
    rejected.add({"id": "r1", "image": b"x"}, "no answer")
    rejected.flush("part-00000")
    assert run.begin("sft_data", {"a": 2}, "h2", stage="distill", overwrite=True) is True
    assert run.parts("sft_data") == [] and run.manifest("sft_data") is None
    assert run.rejected_count("distill") == 0
    assert run.read_json("sft_data", "_started.json")["config_hash"] == "h2"


def test_rejected_rows_keep_id_reason_and_record(run: RunDir) -> None:
    writer = run.rejected("distill")
    assert writer.flush("part-00000") == 0  # nothing to write, no empty file
    writer.add({"id": "ex-1", "image": b"\x89PNG", "question": "how many?"}, "teacher answer wrong")
    writer.add({"question": "no id"}, "missing id")
    assert len(writer) == 2
    assert writer.flush("part-00003") == 2
    table = run.read_table("rejected/distill", require_complete=False, schema_name="rejected")
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == ["ex-1", None]
    assert rows[0]["reason"] == "teacher answer wrong" and rows[0]["stage"] == "distill"
    assert json.loads(rows[0]["record"]) == {"id": "ex-1", "question": "how many?"}
    assert run.rejected_count("distill") == 2


def test_schema_is_enforced_on_write(run: RunDir) -> None:
    bad = _examples(["a"]).set_column(7, "metric", pa.array(["bleu"]))
    with pytest.raises(SchemaError, match="metric"):
        run.write_part("examples", "part-00000", bad, schema_name="examples")
    assert run.parts("examples") == []


def test_missing_artifact_is_a_clear_error(run: RunDir) -> None:
    with pytest.raises(RunDirError, match=r"examples does not exist: run the stage"):
        run.read_table("examples")
    run.begin("pairs", {}, "h")
    run.finish("pairs", stage="build_pairs", config={}, config_hash="h", counts=StageCounts())
    with pytest.raises(RunDirError, match="holds no Parquet parts"):
        run.read_table("pairs")


def test_local_writes_leave_no_temporary_files(tmp_path) -> None:
    run = RunDir(str(tmp_path / "r"))
    run.write_part("a", "part-00000", pa.table({"x": [1]}))
    run.write_json({"k": 1}, "a", MANIFEST)
    assert sorted(os.listdir(tmp_path / "r" / "a")) == [MANIFEST, "part-00000.parquet"]
    part = run.write_batch("a", "s", ["i"], [{"id": "i"}])
    assert os.listdir(tmp_path / "r" / "a" / "_staging") == []  # the workers' (kept while they run)
    run.recover("a")
    assert sorted(os.listdir(tmp_path / "r" / "a")) == [MANIFEST, "part-00000.parquet", f"{part}.parquet"]


def test_s3_uri_with_endpoint_in_the_query(s3_server) -> None:
    endpoint, _ = s3_server
    run = RunDir(f"s3://runs/by-uri?endpoint_override={endpoint}&scheme=http&region=us-east-1")
    assert not run.is_local and run.root == "runs/by-uri"
    run.write_part("x", "part-00000", pa.table({"v": [1, 2]}))
    run.finish("x", stage="s", config={}, config_hash="h", counts=StageCounts(2, 2))
    assert run.read_table("x").column("v").to_pylist() == [1, 2]


def test_bad_uri_is_a_clear_error() -> None:
    with pytest.raises(RunDirError, match="not a usable URI"):
        RunDir("nosuchscheme://bucket/run")
    with pytest.raises(RunDirError, match="run_dir is empty"):
        RunDir("")


# --- parts that commit their rows and rejections together, and the fault switch ------------------

POINTS = ["after_rejected", "after_rows", "after_commit", "mid_publish", "after_publish"]


def _rows(ids: list[str]) -> list[dict]:
    return [{"id": i, "value": k} for k, i in enumerate(ids)]


def _rejections(ids: list[str], stage: str = "distill") -> list[dict]:
    from reasoner.schema import rejected_row

    return [rejected_row({"id": i}, stage, "teacher answer wrong") for i in ids]


def _with_faults(run: RunDir, spec: str) -> RunDir:
    """The same run directory, with the fault switch set to ``spec``."""
    return RunDir(run.uri, filesystem=run.filesystem, faults=spec)


def _ids(run: RunDir, artifact: str) -> list[str]:
    if not run.parts(artifact):
        return []
    return sorted(run.read_table(artifact, columns=["id"], require_complete=False).column("id").to_pylist())


def test_write_batch_commits_rows_and_rejections_together(run: RunDir) -> None:
    # Every input of the batch names the part, also one with neither rows nor a rejection (pending).
    part = run.write_batch("sft", "distill", ["a", "b", "c", "p"], _rows(["a", "b"]), _rejections(["b", "c"]))
    assert part == batch_part_name(["p", "c", "b", "a"])
    assert run.parts("sft") == run.parts("rejected/distill") == [f"{part}.parquet"]
    assert _ids(run, "sft") == ["a", "b"] and _ids(run, "rejected/distill") == ["b", "c"]
    assert run.done_ids("sft", "distill") == {"a", "b", "c"}
    assert not run.exists("sft", "_staging")
    # A batch with no rejections writes no rejected part.
    other = run.write_batch("sft", "distill", ["d"], _rows(["d"]))
    assert f"{other}.parquet" not in run.parts("rejected/distill")


@pytest.mark.parametrize("point", POINTS)
def test_a_write_batch_that_fails_leaves_whole_parts_only(run: RunDir, point: str) -> None:
    faulty = _with_faults(run, f"rundir.write_batch:{point}:2")
    faulty.write_batch("sft", "distill", ["a", "b"], _rows(["a", "b"]), _rejections(["b"]))
    with pytest.raises(InjectedFault, match=point):
        faulty.write_batch("sft", "distill", ["c", "d"], _rows(["c", "d"]), _rejections(["d"]))
    if point in ("after_rejected", "after_rows", "after_commit"):
        # Nothing of the failed part is visible to readers yet: it is staged under "_staging".
        assert _ids(run, "sft") == ["a", "b"] and _ids(run, "rejected/distill") == ["b"]
    committed = point not in ("after_rejected", "after_rows")
    # done_ids settles first: a committed part is put in place, an uncommitted one deleted.
    assert run.done_ids("sft", "distill") == ({"a", "b", "c", "d"} if committed else {"a", "b"})
    assert _ids(run, "sft") == (["a", "b", "c", "d"] if committed else ["a", "b"])
    assert _ids(run, "rejected/distill") == (["b", "d"] if committed else ["b"])
    assert not run.exists("sft", "_staging")
    # The fault fired once for this run directory: the same switch does not fire again.
    again = _with_faults(run, f"rundir.write_batch:{point}:2")
    for i in ("e", "f"):
        again.write_batch("sft", "distill", [i], _rows([i]))
    assert {"e", "f"} <= run.done_ids("sft", "distill") and run.exists("_faults")


def test_a_batch_run_again_replaces_its_part(run: RunDir) -> None:
    # Ray runs a batch again when its worker died: the second attempt may come out otherwise.
    run.write_batch("sft", "distill", ["a", "b"], _rows(["a"]), _rejections(["b"]))
    run.write_batch("sft", "distill", ["a", "b"], _rows(["a", "b"]))
    assert _ids(run, "sft") == ["a", "b"] and _ids(run, "rejected/distill") == []
    # An attempt that died committed but not in place is put in place, then replaced.
    faulty = _with_faults(run, "rundir.write_batch:after_commit:1")
    with pytest.raises(InjectedFault):
        faulty.write_batch("sft", "distill", ["x", "y"], _rows(["x"]), _rejections(["y"]))
    run.write_batch("sft", "distill", ["x", "y"], _rows(["x", "y"]))
    assert _ids(run, "sft") == ["a", "b", "x", "y"] and _ids(run, "rejected/distill") == []


def test_finish_refuses_parts_not_in_place(run: RunDir) -> None:
    run.begin("sft", {}, "h")
    faulty = _with_faults(run, "rundir.write_batch:after_commit:1")
    with pytest.raises(InjectedFault):
        faulty.write_batch("sft", "distill", ["a"], _rows(["a"]))
    with pytest.raises(RunDirError, match="recover"):
        run.finish("sft", stage="distill", config={}, config_hash="h", counts=StageCounts(1, 1))
    assert run.recover("sft") == 1
    run.finish("sft", stage="distill", config={}, config_hash="h", counts=StageCounts(1, 1))
    assert run.read_table("sft").column("id").to_pylist() == ["a"]


def test_a_stage_with_pending_inputs_stays_incomplete(run: RunDir) -> None:
    run.begin("sft", {"a": 1}, "h")
    run.write_batch("sft", "distill", ["a", "b", "c", "d"], _rows(["a", "b"]), _rejections(["c"]))
    resume = "1 of 4 examples pending: run the distill stage again"
    record = run.finish("sft", stage="distill", config={"a": 1}, config_hash="h",
                        counts=StageCounts(4, 2, 1, pending=1), extra={"resume": resume})
    assert record["complete"] is False and record["counts"] == {"in": 4, "out": 2, "rejected": 1, "pending": 1}
    assert run.manifest("sft") is None and run.progress("sft") == record and not run.is_complete("sft")
    with pytest.raises(RunDirError, match=f"sft is incomplete: {resume}"):
        run.require("sft")
    assert run.begin("sft", {"a": 1}, "h") is True  # a rerun has work to do
    run.write_batch("sft", "distill", ["d"], _rows(["d"]))
    manifest = run.finish("sft", stage="distill", config={"a": 1}, config_hash="h",
                          counts=StageCounts(4, 3, 1, pending=0))
    assert "complete" not in manifest and manifest["counts"]["pending"] == 0
    assert run.manifest("sft") == manifest and run.progress("sft") is None and not run.exists("sft", "_progress.json")


def test_a_fault_during_the_manifest_leaves_no_manifest(run: RunDir) -> None:
    faulty = _with_faults(run, "rundir.finish:before_manifest:1")
    faulty.begin("x", {}, "h")
    with pytest.raises(InjectedFault):
        faulty.finish("x", stage="s", config={}, config_hash="h", counts=StageCounts())
    assert run.manifest("x") is None
    faulty.finish("x", stage="s", config={}, config_hash="h", counts=StageCounts())  # fired once
    assert run.manifest("x") is not None


def test_the_fault_switch_comes_from_the_environment_and_is_checked(tmp_path, monkeypatch) -> None:
    assert parse_faults("rundir.write_batch:after_rows:2, rundir.finish:before_manifest:1:exit") == (
        Fault("rundir.write_batch:after_rows", 2, "raise"), Fault("rundir.finish:before_manifest", 1, "exit"))
    assert parse_faults(None) == parse_faults("") == ()
    for bad in ("rundir.write_batch:after_rows", "rundir.write_batch:after_rows:0", "rundir.nowhere:1",
                "rundir.write_batch:after_rows:1:explode"):
        with pytest.raises(ValueError, match="REASONER_FAULT"):
            parse_faults(bad)
    monkeypatch.setenv("REASONER_FAULT", "rundir.write_batch:after_row:1")
    with pytest.raises(RunDirError, match=r"REASONER_FAULT=.*after_row:1.*is not <point>:<n>"):
        RunDir(str(tmp_path / "r"))
    monkeypatch.setenv("REASONER_FAULT", "rundir.write_batch:after_rows:1")
    run = RunDir(str(tmp_path / "r"))
    assert run.faults == "rundir.write_batch:after_rows:1"
    assert RunDir(str(tmp_path / "r"), faults="").faults == ""
    with pytest.raises(InjectedFault):
        run.write_batch("sft", "distill", ["a"], _rows(["a"]))
    assert run.done_ids("sft", "distill") == set()
