"""Run directories on local disk and on S3 (moto's server on 127.0.0.1): parts, manifests,
config mismatch refusal, rejected rows."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from reasoner.rundir import MANIFEST, ConfigMismatchError, RunDir, RunDirError, StageCounts
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
