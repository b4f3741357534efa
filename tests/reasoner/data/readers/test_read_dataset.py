"""read_dataset over every reader: the registry, errors at the call, limits, the examples
schema, rejected rows, and a release read from a local S3 server."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from reasoner.data.readers import DATASETS, READERS, Rejected, read_dataset
from reasoner.schema import rejected_row, validate_rows
from tests.reasoner.data.readers.releases import RELEASES, read, write_chartqa, write_textvqa

KINDS = ("no image", "missing image", "bad image", "no question", "no answer", "bad choices",
         "bad answer")


def test_registry_names_every_dataset() -> None:
    assert DATASETS == tuple(READERS) == (
        "aokvqa", "aokvqa-mc", "chartqa", "docvqa", "infovqa", "textvqa", "scienceqa", "ai2d",
        "mathvision", "gllava", "mathvista")
    assert set(RELEASES) == set(DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_rows_fit_the_examples_schema(tmp_path, name) -> None:
    build, split, count = RELEASES[name]
    build(tmp_path)
    rows, rejected = read(name, tmp_path, split)
    assert len(rows) == count and rejected, "each tiny release has usable and unusable records"
    table = validate_rows(rows, "examples")
    assert table.num_rows == count
    ids = [r["id"] for r in rows] + [r.row["id"] for r in rejected]
    assert len(set(ids)) == len(ids) and all(i.startswith(f"{name}-") for i in ids)
    assert {r["source"] for r in rows} == {name}
    for item in rejected:
        assert item.reason.startswith(KINDS), item.reason
    validate_rows([rejected_row(r.row, "examples", r.reason) for r in rejected], "rejected")


def test_errors_come_at_the_call(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'vqav2'; expected one of aokvqa, "):
        read_dataset("vqav2", str(tmp_path), "val")
    with pytest.raises(ValueError, match=r"mathvista has no split 'val'; its splits are test, "
                                         r"testmini"):
        read_dataset("mathvista", str(tmp_path), "val")
    with pytest.raises(FileNotFoundError, match="dataset root .*nowhere' does not exist"):
        read_dataset("textvqa", str(tmp_path / "nowhere"), "val")
    with pytest.raises(FileNotFoundError, match=r"no file 'TextVQA_0.5.1_val.json' under .*; "
                                                r"the layout read expects TextVQA's"):
        read_dataset("textvqa", str(tmp_path), "val")
    write_textvqa(tmp_path)
    with pytest.raises(TypeError, match="subset"):
        read_dataset("textvqa", str(tmp_path), "val", subset="human")
    with pytest.raises(ValueError, match="limit must be"):
        read_dataset("textvqa", str(tmp_path), "val", limit=-1)


def test_limit_counts_rows_and_rejected_records(tmp_path) -> None:
    write_chartqa(tmp_path)
    items = list(read_dataset("chartqa", str(tmp_path), "test", limit=4))
    assert [type(i) for i in items] == [dict, dict, Rejected, Rejected]
    assert list(read_dataset("chartqa", str(tmp_path), "test", limit=0)) == []


def test_chartqa_from_a_local_s3_server(tmp_path, s3) -> None:
    endpoint, fs = s3
    write_chartqa(tmp_path / "chartqa")
    pafs.copy_files(str(tmp_path / "chartqa"), "datasets/data/chartqa",
                    source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    local = list(read_dataset("chartqa", str(tmp_path / "chartqa"), "test"))
    from_s3 = list(read_dataset("chartqa", "datasets/data/chartqa", "test", filesystem=fs))
    uri = (f"s3://testing:testing@datasets/data/chartqa?endpoint_override={endpoint}"
           "&scheme=http&region=us-east-1")
    from_uri = list(read_dataset("chartqa", uri, "test"))
    rows = [i for i in local if not isinstance(i, Rejected)]
    assert [i for i in from_s3 if not isinstance(i, Rejected)] == rows
    assert [i for i in from_uri if not isinstance(i, Rejected)] == rows
    rejected = [i for i in from_s3 if isinstance(i, Rejected)]
    assert [r.reason for r in rejected] == [
        "no answer: the record has no (non-empty) answer",
        "missing image: no file 'datasets/data/chartqa/ChartQA Dataset/test/png/missing.png'"]
    with pytest.raises(FileNotFoundError, match=r"'datasets/data/nothing' on s3\) does not"):
        read_dataset("chartqa", "s3://datasets/data/nothing", "test", filesystem=fs)
