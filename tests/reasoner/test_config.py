"""The run config: every shipped config loads; overrides and errors name the full key."""

from __future__ import annotations

import pathlib

import pytest

from reasoner.config import DEFAULT_STAGES, ConfigError, RunConfig, load_run_config, to_dict
from reasoner.options import dump_yaml

CONFIG_DIR = pathlib.Path(__file__).parents[2] / "jobs" / "configs"
SHIPPED = sorted(CONFIG_DIR.rglob("*.yaml"))


def test_configs_are_shipped() -> None:
    assert CONFIG_DIR / "default.yaml" in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_config_loads_and_round_trips(path: pathlib.Path, tmp_path) -> None:
    config = load_run_config(str(path))
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(config))
    assert load_run_config(str(again)) == config


def test_default_config_is_the_embedded_default() -> None:
    config = load_run_config(str(CONFIG_DIR / "default.yaml"))
    assert config.model.preset == "tiny"  # the 15-minute main job; quality.yaml trains "small"
    assert config.examples.source == "synthetic"
    assert tuple(config.stages) == DEFAULT_STAGES
    # The YAML spells out every key, so the file documents the whole config.
    assert to_dict(config).keys() == to_dict(RunConfig()).keys()


def test_overrides_reach_nested_sections() -> None:
    config = load_run_config(str(CONFIG_DIR / "default.yaml"),
                             ["run_dir=/tmp/x", "examples.synthetic.num_items=12", "model.preset=tiny",
                              "stages=[make_examples]"])
    assert config.run_dir == "/tmp/x"
    assert config.examples.synthetic.num_items == 12
    assert config.model.preset == "tiny"
    assert config.stages == ["make_examples"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.preset=huge", r"model\.preset='huge' is invalid: .*tiny"),
        ("examples.synthetic.image_size=16", r"examples\.synthetic\..*image_size.*16"),
        ("examples.synthetic.families=[chart, maps]", r"examples\.synthetic\..*maps"),
        ("examples.items_per_part=0", r"examples\.items_per_part=0 is invalid"),
        ("examples.source=chartqa", r"examples\.source='chartqa' is invalid: expected one of 'synthetic'"),
        ("stages=[init_model, make_examples]", r"stages=.* recipe order"),
        ("stages=[train]", r"'train' is not a stage"),
        ("stages=[report, evaluate]", r"stages=.* recipe order"),
        ("distill.teacher=gpt", r"distill\.teacher='gpt' is invalid"),
        ("sample.top_p=0", r"sample\.top_p=0\.0 is invalid"),
        ("examples.source=datasets", r"examples\.datasets=\[\] is invalid: list at least one dataset"),
        ("examples.datasets=[{name: mnist, path: /x}]", r"examples\.datasets\[0\]\.name='mnist' is invalid"),
        ("ray.num_cpus=0", r"ray\.num_cpus=0 is invalid"),
        ("model.presett=tiny", r"unknown config key model\.'presett'\. Did you mean model\.preset\?"),
        ("overwrite=yes please", r"overwrite='yes please' is invalid: expected true or false"),
    ],
)
def test_bad_values_name_the_full_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config(str(CONFIG_DIR / "default.yaml"), [override])


def test_one_correct_threshold_for_every_stage() -> None:
    """The top-level key sets every stage's definition of correct; a section may not set its own."""
    config = load_run_config(None, ["correct_threshold=0.7"])
    assert {config.sample.correct_threshold, config.evaluate.correct_threshold, config.rerank.correct_threshold,
            config.sft.eval.correct_threshold, config.dpo.eval.correct_threshold,
            config.sft.select.correct_threshold, config.distill.correct_threshold} == {0.7}
    with pytest.raises(ConfigError, match="sample.correct_threshold: set once for the whole run, by the top-level"):
        load_run_config(None, ["sample.correct_threshold=0.3"])
    with pytest.raises(ConfigError, match="correct_threshold=0.0 is invalid"):
        load_run_config(None, ["correct_threshold=0"])
