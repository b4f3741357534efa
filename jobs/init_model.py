"""Stage init_model: the base model, into ``<run>/models/base``: a preset built here, or a
pretrained checkpoint imported.

    python -m jobs.init_model --config jobs/configs/default.yaml run_dir=runs/r1
    python -m jobs.init_model --config jobs/configs/h100.yaml run_dir=s3://bucket/r1 \
        model.path=s3://bucket/models/llama3-llava-next-8b-hf
    ray job submit --working-dir . -- python -m jobs.init_model --config jobs/configs/default.yaml

With ``model.path`` (a local directory, a bucket URI or a hub id), a Hugging Face LLaVA or
LLaVA-NeXT release is copied in and checked (``reasoner.models.pretrained``): architecture, image
token, chat template, processor config, safetensors weights in vLLM's layout; every later stage
uses its own processor and chat template. Otherwise the tokenizer is trained on the text of the
run's train examples (questions, options and rationales) and the paper's instructions, and the
model is the preset (``model.preset``) with random weights, saved in Hugging Face format in the
layout transformers and vLLM both load.
"""

from __future__ import annotations

import logging
import tempfile

import pyarrow.compute as pc

from reasoner.config import RunConfig, to_dict
from reasoner.data.synthetic import suite_text
from reasoner.rundir import RunDir, StageCounts

from jobs._common import Timings, begin_stage, run_job, say

logger = logging.getLogger("jobs.init_model")
STAGE, ARTIFACT = "init_model", "models/base"


def main(config: RunConfig) -> None:
    from reasoner.models.build import build_base_model

    section, timings = config.model, Timings()
    run = RunDir(config.run_dir)
    # The model depends on the examples it was trained on as much as on its own section.
    examples_hash = run.require("examples")["config_hash"]
    provenance = {"model": to_dict(section), "examples_config_hash": examples_hash}
    digest = begin_stage(run, ARTIFACT, STAGE, provenance, config.overwrite)
    if digest is None:
        return
    if section.path:
        _import(run, config, provenance, digest, timings)
        return
    with timings.step("read examples"):
        table = run.read_table("examples", columns=["split", "question", "choices", "rationale"])
        train = table.filter(pc.equal(table.column("split"), "train")).to_pylist()
    image_size = section.image_size or config.examples.synthetic.image_size
    with timings.step("build"), tempfile.TemporaryDirectory() as scratch:
        out = run.path(ARTIFACT) if run.is_local else scratch
        build_base_model(out, section.preset, texts=suite_text(train), image_size=image_size, seed=section.seed)
        run.upload(out, ARTIFACT)
    run.finish(ARTIFACT, stage=STAGE, config=provenance, config_hash=digest,
               counts=StageCounts(in_=len(train), out=1), seed=section.seed, timings=timings,
               extra={"preset": section.preset, "image_size": image_size})
    say("base model (%s, %d px) -> %s", section.preset, image_size, run.path(ARTIFACT))


def _import(run: RunDir, config: RunConfig, provenance: dict, digest: str, timings: Timings) -> None:
    from reasoner.config import ConfigError
    from reasoner.models.pretrained import CheckpointError, import_checkpoint

    source = config.model.path
    with timings.step("import"), tempfile.TemporaryDirectory() as scratch:
        out = run.path(ARTIFACT) if run.is_local else scratch
        try:
            described = import_checkpoint(source, out)
        except CheckpointError as e:
            raise ConfigError(f"model.path: {e}") from None
        run.upload(out, ARTIFACT)
    run.finish(ARTIFACT, stage=STAGE, config=provenance, config_hash=digest, counts=StageCounts(in_=1, out=1),
               seed=config.model.seed, timings=timings, extra={"pretrained": described})
    say("base model imported from %s (%s, %.3gM parameters) -> %s", source, described["architecture"],
        described["parameters"] / 1e6, run.path(ARTIFACT))


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("model", "ray"), uses_ray=False)
