from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from gafkit.config import (
    build_config,
    from_dict,
    load_config_file,
    merge,
    parse_sets,
    save_config,
    select_preset,
    to_dict,
)
from gafkit.errors import ConfigError, GafkitError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Stage:
    iters: int = 100
    mode: Literal["fast", "slow"] = "fast"
    out: Optional[Path] = None
    weights: dict[str, Optional[float]] = field(default_factory=lambda: {"l1": 1.0})
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)


PRESETS = {"default": Stage, "long": lambda: Stage(iters=1000)}


def test_merge_nested_and_dotted_keys():
    cfg = merge(Stage(), {"optim": {"lr": 0.01}, "optim.betas": [0.5, 0.6], "iters": 7})
    assert cfg.optim.lr == 0.01 and cfg.optim.betas == (0.5, 0.6) and cfg.iters == 7
    assert Stage().optim.lr == 1e-3  # the base is not mutated


def test_int_accepted_for_float_but_not_the_reverse():
    assert merge(Stage(), {"optim.lr": 1}).optim.lr == 1.0
    with pytest.raises(ConfigError, match="iters: expected an integer"):
        merge(Stage(), {"iters": 1.5})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"itres": 3}, "unknown setting 'itres'"),
        ({"optim.momentum": 3}, "unknown setting 'optim.momentum'"),
        ({"mode": "medium"}, "mode: 'medium' is not one of"),
        ({"optim.betas": [1, 2, 3]}, "expected 2 values"),
        ({"iters": True}, "expected an integer"),
        ({"tags": "a"}, "expected a list"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        merge(Stage(), data)


def test_optional_and_none_weights():
    cfg = merge(Stage(), {"out": "x/y", "weights": {"l1": None, "ssim": 0.2}})
    assert cfg.out == Path("x/y")
    assert cfg.weights == {"l1": None, "ssim": 0.2}


def test_parse_sets():
    assert parse_sets(["a.b=1", "c=[1, 2]", "d=hello", "e=null"]) == {"a.b": 1, "c": [1, 2], "d": "hello", "e": None}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_sets(["novalue"])


def test_precedence_preset_file_set_flag(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("iters: 5\noptim:\n  lr: 0.5\nmode: slow\n")
    cfg = build_config(select_preset(PRESETS, "long", "default"), file=file, sets=["optim.lr=0.25"], flags={"mode": None})
    assert (cfg.iters, cfg.optim.lr, cfg.mode) == (5, 0.25, "slow")
    cfg = build_config(Stage(), file=file, sets=["iters=6"], flags={"iters": 9})
    assert cfg.iters == 9


def test_toml_file(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('iters = 3\n[optim]\nlr = 0.1\n')
    cfg = build_config(Stage(), file=file)
    assert cfg.iters == 3 and cfg.optim.lr == 0.1


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iters: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid yaml"):
        build_config(Stage(), file=bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("nope: 1\n")
    with pytest.raises(ConfigError, match="wrong.yaml: unknown setting 'nope'"):
        build_config(Stage(), file=wrong)
    with pytest.raises(ConfigError, match="config file not found"):
        build_config(Stage(), file=tmp_path / "missing.yaml")
    assert issubclass(ConfigError, GafkitError)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="choose one of: default, long"):
        select_preset(PRESETS, "huge", "default")


def test_save_and_load_round_trip(tmp_path):
    cfg = merge(Stage(), {"iters": 11, "out": "a", "tags": ["x"], "optim.betas": [0.1, 0.2]})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config_file(Stage, tmp_path / "config.yaml") == cfg
    assert from_dict(Stage, to_dict(cfg)) == cfg


def test_exponent_without_a_dot_is_a_number():
    # YAML 1.1 reads "2e-2" as a string; --set lr=2e-2 must still work, and words must still fail.
    assert build_config(Stage(), sets=["optim.lr=2e-2"]).optim.lr == 0.02
    with pytest.raises(ConfigError, match="expected a number"):
        build_config(Stage(), sets=["optim.lr=fast"])
