"""Typed stage configs: dataclasses, presets, config files and overrides.

Every stage is driven by one nested dataclass. A run's effective config is built in a fixed order,
each layer overriding the previous one:

1. a named preset (a function returning the dataclass; the dataclass defaults when none is named),
2. ``--config FILE`` (YAML or TOML, nested tables or dotted keys, only the keys to change),
3. ``--set section.key=value`` (values parsed as YAML scalars/lists),
4. the stage's explicit CLI flags (``--iters 100``), which win.

Unknown keys and values of the wrong type are :class:`~gafkit.errors.ConfigError`s naming the key.
The effective config is written next to the artifact with :func:`save_config` and read back with
:func:`load_config_file`, so any run can be repeated from its output folder.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Opt:
...     lr: float = 1e-3
>>> @dataclass
... class Cfg:
...     iters: int = 10
...     opt: Opt = field(default_factory=Opt)
>>> build_config(Cfg(), sets=["opt.lr=0.01"], flags={"iters": 5})
Cfg(iters=5, opt=Opt(lr=0.01))
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from gafkit.errors import ConfigError

T = TypeVar("T")

Presets = Mapping[str, Callable[[], T]]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serializable dict of a config dataclass (Paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type annotation ``hint``, converting lossless cases (int->float...)."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {hint}")
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table of settings, got {value!r}")
        return merge(hint(), value, prefix=key)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        args = get_args(hint)
        item = args[1] if args else Any
        return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponents without a dot ("2e-2") as strings; users write them anyway.
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: cannot use {value!r} as {hint}")


def _hints(cls: type) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, globalns=vars(module) if module else None)


def merge(cfg: T, data: Mapping[str, Any], prefix: str = "") -> T:
    """Return a copy of the dataclass ``cfg`` with the (possibly nested, possibly dotted) keys of
    ``data`` replaced, each value checked against the field's type."""
    nested: dict[str, Any] = {}
    for raw_key, value in data.items():
        head, _, rest = str(raw_key).partition(".")
        if rest:
            value = {rest: value}
        if isinstance(nested.get(head), dict) and isinstance(value, Mapping):
            nested[head] = {**nested[head], **value}
        else:
            nested[head] = dict(value) if isinstance(value, Mapping) else value
    hints = _hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    updates: dict[str, Any] = {}
    for name, value in nested.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown setting {key!r} (known here: {known})")
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            updates[name] = merge(current, value, prefix=key)
        else:
            updates[name] = _coerce(value, hints[name], key)
    return dataclasses.replace(cfg, **updates)


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build ``cls`` from a (partial) dict, defaults filling what is missing."""
    return merge(cls(), data)


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``; values are YAML scalars or lists."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.iters=500")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: cannot parse the value ({err.__class__.__name__})") from err
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except Exception as err:  # parse errors of either format are the user's
        first = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {first}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    return data


def select_preset(presets: Presets[T], name: str | None, default: str) -> T:
    """Call the preset named ``name`` (or ``default``), with the valid names in the error."""
    name = name or default
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(presets)}")
    return presets[name]()


def build_config(
    base: T,
    *,
    file: str | Path | None = None,
    sets: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Apply a config file, ``--set`` overrides and explicit flags (``None`` = not given) to ``base``."""
    cfg = base
    if file is not None:
        data = read_config_file(file)
        try:
            cfg = merge(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{file}: {err}") from err
    cfg = merge(cfg, parse_sets(sets))
    if flags:
        cfg = merge(cfg, {k: v for k, v in flags.items() if v is not None})
    return cfg


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the effective config as YAML (readable by :func:`load_config_file`)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
    Path(path).write_text(f"# {type(cfg).__name__}, written by gafkit\n{text}", encoding="utf-8")


def load_config_file(cls: type[T], path: str | Path) -> T:
    """Read a config written by :func:`save_config` (or by hand) back into ``cls``."""
    return from_dict(cls, read_config_file(path))
