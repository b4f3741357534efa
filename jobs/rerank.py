"""Job rerank: N candidates a question from a generator, reranked by the DPO verifier, in batch.

    python -m jobs.rerank --config jobs/configs/default.yaml run_dir=runs/default rerank.split=test
    python -m jobs.rerank --config jobs/configs/h100.yaml run_dir=s3://bucket/r1 \\
        rerank.input=s3://bucket/questions/ rerank.n=16
    ray job submit --working-dir . -- python -m jobs.rerank --config jobs/configs/h100.yaml run_dir=s3://bucket/r1 ...

Reads any Parquet of questions in the example schema (``rerank.input``; the run's own examples by
default) and writes ``<run>/<rerank.output>/answers``: a question a row, with its ``n`` candidates
(text, extracted answer, the verifier's reward, the control's mean likelihood, log-probs) and each
strategy's choice (``index_<s>``, ``answer_<s>``, and ``correct_<s>`` where the question has
answers). The same sampling, scoring and choice code as ``jobs.evaluate``'s pool and the served
``/v1/reason`` (``reasoner.rerank``). Two Ray Data passes, each an actor pool of
``rerank.num_engines`` engines built as the run's ``engine`` section says: the generator samples
and scores (``<output>/sampled``), then the verifier scores; each resumes by part, and unusable
questions go to ``<run>/rejected/<rerank.output>`` with the reason. ``sampled`` (the images included) is
deleted once the answers are complete.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pyarrow.fs as pafs

from reasoner.config import ConfigError, RunConfig, identity, to_dict
from reasoner.models.engine import engine_kwargs, ray_options
from reasoner.rerank import ANSWERS, REQUIRED_COLUMNS, SAMPLED, STAGE, PoolWorker, RerankConfig, VerifyWorker, summary
from reasoner.rundir import RunDir, StageCounts

from jobs._common import Timings, begin_stage, parts_poll, progress, read_rows, run_job, say

logger = logging.getLogger("jobs.rerank")


def input_source(run: RunDir, section: RerankConfig) -> tuple[pafs.FileSystem, str, str]:
    """The filesystem and path of the questions, and how to name them in messages."""
    if section.input is None:
        return run.fs, run.path("examples"), run.path("examples")
    if "://" in section.input:
        try:
            fs, path = pafs.FileSystem.from_uri(section.input)
        except (ValueError, OSError) as e:
            raise ConfigError(f"rerank.input={section.input!r}: cannot open it: {e}") from None
        return fs, path, section.input
    path = os.path.abspath(os.path.expanduser(section.input))
    return pafs.LocalFileSystem(), path, path


def question_ids(fs: pafs.FileSystem, path: str, name: str, section: RerankConfig) -> list[str]:
    """The ids to rerank: every row's (of ``section.split``), a fixed subset of ``max_questions``.
    Missing columns, null or repeated ids are refused, naming the input and the id."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from reasoner.data.examples import subset

    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"rerank.input: {name} does not exist; give a Parquet file or directory of questions")
    try:
        dataset = ds.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=False)
        missing = [c for c in REQUIRED_COLUMNS if c not in dataset.schema.names]
        if section.split is not None and "split" not in dataset.schema.names:
            missing.append("split")
        if missing:
            raise ConfigError(f"rerank.input: {name} has no column(s) {missing} (it has {dataset.schema.names}); "
                              "questions need the example schema's id, image, question and metric")
        columns = ["id"] + (["split"] if section.split is not None else [])
        table = dataset.to_table(columns=columns)
    except (OSError, ValueError) as e:
        raise ConfigError(f"rerank.input: {name} is not readable Parquet: {e}") from None
    if table.column("id").null_count:
        raise ConfigError(f"rerank.input: {name} has {table.column('id').null_count} row(s) with a null id")
    if section.split is not None:
        table = table.filter(pc.equal(table.column("split"), section.split))
    ids = table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        seen, repeated = set(), None
        for i in ids:
            if i in seen:
                repeated = i
                break
            seen.add(i)
        raise ConfigError(f"rerank.input: {name}: id {repeated!r} appears more than once; ids must be unique")
    return subset(ids, section.max_questions)


def main(config: RunConfig) -> None:
    import ray

    section, timings = config.rerank, Timings()
    run = RunDir(config.run_dir)
    generator = run.require(section.generator)
    verifier = None
    if section.verifier is not None:
        verifier = run.manifest(section.verifier)
        if verifier is None:
            raise ConfigError(f"rerank.verifier={section.verifier!r} is not a finished artifact of {run.root}; "
                              "train it (jobs.train_dpo), name another, or set rerank.verifier=null to rerank "
                              "without a verifier (single, majority and control)")
    beta = section.beta if section.beta is not None else None if verifier is None else verifier.get("beta")
    if verifier is not None and beta is None:
        raise ConfigError(f"rerank.verifier={section.verifier!r} records no beta (not trained by train_dpo); "
                          "give rerank.beta")
    fs, path, name = input_source(run, section)
    with timings.step("plan"):
        ids = question_ids(fs, path, name, section)
    if not ids:
        raise ConfigError(f"rerank.input: {name} has no questions" + (
            f" of split {section.split!r}" if section.split is not None else ""))
    provenance = {"rerank": identity(section), "input": name, "generator_config_hash": generator["config_hash"],
                  "verifier_config_hash": None if verifier is None else verifier["config_hash"], "beta": beta}
    digest = begin_stage(run, section.output, STAGE, provenance, config.overwrite)
    if digest is None:
        return
    sampled, answers = f"{section.output}/{SAMPLED}", f"{section.output}/{ANSWERS}"
    engine, options = engine_kwargs(config.engine), ray_options(config.engine)
    cache_dir = os.path.expanduser(config.cache_dir)

    todo = sorted(set(ids) - run.done_ids(sampled, section.output))
    say("rerank: %d questions from %s, %d to sample (%d candidates each from %s)", len(ids), name, len(todo),
        section.n, section.generator)
    if todo:
        with timings.step("sample"), progress("sample", parts_poll(run, sampled, section.questions_per_part,
                                                                    len(todo)), unit="questions"):
            done = read_rows(fs, path, todo, section.questions_per_part).map_batches(
                PoolWorker, batch_format="pyarrow", batch_size=section.questions_per_part,
                fn_constructor_kwargs={"run": run, "artifact": section.generator, "cache_dir": cache_dir,
                                       "config": section, "engine": engine},
                compute=ray.data.ActorPoolStrategy(size=section.num_engines), **options).take_all()
            logger.info("sampled %d candidates for %d questions; %d rejected", sum(r["candidates"] for r in done),
                        sum(r["questions"] for r in done), sum(r["rejected"] for r in done))
    finished = set(run.parts(answers))
    parts = [p for p in run.parts(sampled) if p not in finished]
    if parts:
        label = "verify" if verifier is not None else "choose"
        with timings.step(label), progress(label, parts_poll(run, answers, 1, len(parts)), unit="parts"):
            worker_options = options if verifier is not None else {"num_cpus": 1}
            ray.data.from_items([{"part": p} for p in parts]).map_batches(
                VerifyWorker, batch_size=1,
                fn_constructor_kwargs={"run": run, "artifact": section.verifier if verifier is not None else None,
                                       "cache_dir": cache_dir, "config": section, "beta": beta, "engine": engine},
                compute=ray.data.ActorPoolStrategy(size=section.num_engines), **worker_options).take_all()
    with timings.step("count"):
        table = run.read_table(answers, require_complete=False)
        rejected = run.rejected_count(section.output)
        result: dict[str, Any] = summary(table, section.run_strategies(verifier is not None))
    if table.num_rows + rejected < len(ids):
        raise RuntimeError(f"rerank: {len(ids) - table.num_rows - rejected} of {len(ids)} questions have neither "
                           "answers nor a rejection; run the job again to finish them")
    run.finish(section.output, stage=STAGE, config={**provenance, "rerank": to_dict(section)}, config_hash=digest,
               counts=StageCounts(in_=len(ids), out=table.num_rows, rejected=rejected), seed=section.seed,
               timings=timings, extra=result)
    run.delete(sampled)
    say("%s", format_summary(result, run.path(answers)))


def format_summary(result: dict[str, Any], where: str) -> str:
    """The terminal's account: questions reranked, and each strategy's accuracy where graded."""
    from jobs._console import format_table

    lines = [f"reranked {result['questions']} questions -> {where}"]
    if result.get("accuracy"):
        lines.append(format_table(["strategy", f"accuracy ({result['graded']} graded)"],
                                  [[s, f"{a:.3f}"] for s, a in result["accuracy"].items()]))
    return "\n".join(lines)


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("rerank", "engine", "ray"))
