"""The typed config machinery: building from data, overrides, errors that name key, value and fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from reasoner.options import (
    ConfigError,
    apply_overrides,
    check,
    config_hash,
    dump_yaml,
    from_dict,
    iter_help,
    load_yaml,
    option,
    parse_override,
    section,
    to_dict,
)


@dataclass
class Inner:
    lr: float = option(1e-3, "learning rate")
    mode: Literal["cot", "direct"] = option("cot", "training mode")

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", self.lr, "use a positive learning rate such as 1e-4")


@dataclass
class Outer:
    name: str = option("run", "a name")
    steps: int = option(10, "number of steps")
    tags: list[str] = option(["a"], "tags")
    fractions: tuple[float, float] = option((0.5, 0.5), "two fractions")
    device: str | None = option(None, "optional device")
    inner: Inner = section(Inner, "the inner section")


def test_defaults_and_round_trip() -> None:
    cfg = from_dict(Outer, {})
    assert cfg == Outer()
    again = from_dict(Outer, to_dict(cfg))
    assert again == cfg
    assert to_dict(cfg) == {"name": "run", "steps": 10, "tags": ["a"], "fractions": [0.5, 0.5],
                            "device": None, "inner": {"lr": 0.001, "mode": "cot"}}


def test_mutable_defaults_are_not_shared() -> None:
    a, b = Outer(), Outer()
    a.tags.append("x")
    assert b.tags == ["a"]


def test_values_are_converted() -> None:
    cfg = from_dict(Outer, {"steps": 3, "fractions": [1, 0], "inner": {"lr": 1}, "device": "cpu"})
    assert cfg.fractions == (1.0, 0.0) and isinstance(cfg.fractions, tuple)
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.device == "cpu"


def test_unknown_key_names_the_valid_keys_and_a_close_match() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'stpes'.*Did you mean steps\?.*name, steps, tags"):
        from_dict(Outer, {"stpes": 3})
    with pytest.raises(ConfigError, match=r"unknown config key inner\.'rate'"):
        from_dict(Outer, {"inner": {"rate": 3}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": "ten"}, r"steps='ten' is invalid: expected an integer"),
        ({"steps": True}, r"steps=True is invalid: expected an integer"),
        ({"steps": 2.5}, r"steps=2.5 is invalid: expected an integer"),
        ({"tags": "a"}, r"tags='a' is invalid: expected a list"),
        ({"tags": [1]}, r"tags\[0\]=1 is invalid: expected a string"),
        ({"fractions": [1, 2, 3]}, r"fractions=\[1, 2, 3\] is invalid: expected 2 items"),
        ({"inner": {"mode": "both"}}, r"inner.mode='both' is invalid: expected one of 'cot', 'direct'"),
        ({"inner": 3}, r"inner=3 is invalid: expected a section"),
        ({"inner": {"lr": -1}}, r"inner.lr=-1.0 is invalid: use a positive learning rate"),
    ],
)
def test_bad_values_name_key_value_and_fix(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_overrides_parse_yaml_values_and_nest() -> None:
    assert parse_override("inner.lr=1e-4") == (["inner", "lr"], 1e-4)
    assert parse_override("tags=[x, y]") == (["tags"], ["x", "y"])
    assert parse_override("device=null") == (["device"], None)
    assert parse_override("name=") == (["name"], "")
    merged = apply_overrides({"inner": {"mode": "cot"}}, ["inner.lr=0.5", "steps=4", "new.deep.key=1"])
    assert merged == {"inner": {"mode": "cot", "lr": 0.5}, "steps": 4, "new": {"deep": {"key": 1}}}


@pytest.mark.parametrize("text", ["steps", "=3", "a..b=1", ".a=1"])
def test_malformed_override_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="malformed"):
        parse_override(text)


def test_override_into_a_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="'steps' is a value, not a section"):
        apply_overrides({"steps": 3}, ["steps.x=1"])


def test_hash_is_stable_and_content_sensitive() -> None:
    assert config_hash(Outer()) == config_hash(from_dict(Outer, to_dict(Outer())))
    assert config_hash(Outer()) != config_hash(from_dict(Outer, {"steps": 11}))
    assert len(config_hash(Outer())) == 16


def test_help_lists_every_leaf_key() -> None:
    rows = {key: (tp, default, text) for key, tp, default, text in iter_help(Outer)}
    assert rows["inner.lr"] == ("float", 0.001, "learning rate")
    assert rows["inner.mode"][0] == "'cot' | 'direct'"
    assert rows["device"][0] == "str | null"
    assert set(rows) == {"name", "steps", "tags", "fractions", "device", "inner.lr", "inner.mode"}


def test_yaml_files(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(Outer()))
    assert from_dict(Outer, load_yaml(str(path))) == Outer()
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(str(tmp_path / "bad.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(str(tmp_path / "list.yaml"))
