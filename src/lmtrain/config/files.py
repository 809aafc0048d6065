"""Reading a config: YAML file, `--set section.key=value` overrides, type checks, did-you-mean.

Turns text into the frozen `lmtrain.config.schema.Config` (the schema, which checks ranges and the
rules between keys) and back (`save_config`, what a run directory keeps). A value is checked
against its field's type hint here, once, so an unknown key or a value of the wrong type raises
one `ConfigError` naming the key, the value received and, for unknown keys, the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from lmtrain.config.schema import Config, DataConfig, ModelConfig, TokenizerConfig, TrainConfig
from lmtrain.errors import ConfigError, did_you_mean
from lmtrain.paths import write_atomic

# What PyYAML's safe constructors raise besides YAMLError (dates out of range, deep nesting).
_YAML_VALUE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)

_SECTIONS: dict[str, type] = {"data": DataConfig, "tokenizer": TokenizerConfig, "model": ModelConfig,
                              "train": TrainConfig}


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (None: the built-in defaults) and apply `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    raw = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for item in overrides:
        _apply_override(raw, item)
    return config_from_dict(raw)


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Build a validated `Config` from a nested mapping; unknown keys and bad values raise."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping of sections, got {type(raw).__name__}")
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"unknown config section {name!r}{did_you_mean(str(name), _SECTIONS)}")
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of keys, got {value!r}")
        sections[name] = _build_section(name, _SECTIONS[name], value)
    try:
        return Config(**sections)
    except TypeError as exc:  # pragma: no cover - defensive, keys are checked above
        raise ConfigError(str(exc)) from None


def unused_overrides(overrides: Sequence[str], config: Config, trained: Config, honoured: set[str],
                     verb: str, run_dir: str | Path) -> list[str]:
    """One notice for each `--set` key that `verb` cannot honour: a key the trained run fixed
    (its shapes, `train.stateful`, ...) given a value other than the run's own. Such a verb
    rebuilds the model from the run directory's config, so the override would otherwise be
    dropped without a word. `honoured` are the keys the verb does read from `config`."""
    notices = []
    mine, theirs = config.to_dict(), trained.to_dict()
    for item in overrides:
        key = _split_override(item)[0]
        section, _, name = key.partition(".")
        if key in honoured or name not in mine.get(section, {}):
            continue
        wanted, used = mine[section][name], theirs[section][name]
        if wanted != used:
            notices.append(f"notice: --set {key}={_yaml_text(wanted)} is not used: `lmtrain {verb}` takes "
                           f"{key} from the trained run in {run_dir}, which has {_yaml_text(used)}")
    return notices


def _yaml_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def save_config(config: Config, path: Path) -> None:
    """Write the fully resolved config, so a run directory describes itself."""
    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False).encode())


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        # safe_load only: a config must never be able to construct Python objects.
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except _YAML_VALUE_ERRORS as exc:  # a well-formed scalar YAML cannot build, e.g. 2024-13-45
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of sections, got {type(data).__name__}")
    return data


def _split_override(item: str) -> tuple[str, str, str]:
    """`section.key=value` as (section.key, '=' or '' when it is missing, value text)."""
    key, sep, text = item.partition("=")
    return key.strip(), sep, text


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = _split_override(item)
    if not sep or "." not in key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.batch_size=64")
    section, _, name = key.partition(".")
    if section not in _SECTIONS:
        raise ConfigError(f"--set {key}: unknown section {section!r}{did_you_mean(section, _SECTIONS)}")
    valid = {f.name for f in dataclasses.fields(_SECTIONS[section])}
    if name not in valid:
        raise ConfigError(f"--set {key}: unknown key {name!r} in section "
                          f"{section!r}{did_you_mean(name, valid, section + '.')}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except (yaml.YAMLError, *_YAML_VALUE_ERRORS):
        value = text
    if raw.get(section) is None:  # an absent or empty (`train:`) section
        raw[section] = {}
    target = raw[section]
    if not isinstance(target, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {target!r}")
    target[name] = value


def _build_section(section: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(f"unknown config key {section}.{key}{did_you_mean(str(key), valid, section + '.')}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the field's type hint; return it in the field's type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        mappings = [a for a in inner if typing.get_origin(a) is dict]
        if mappings and isinstance(value, Mapping):
            return _coerce(key, value, mappings[0])
        return _coerce(key, value, inner[0])
    if origin is dict:  # dict[str, X]: a mapping with string keys
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a mapping with string keys, got {value!r}")
        return {k: _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if origin is Literal:
        # Match type as well as value: YAML 1 must not pass for true (1 == True in Python).
        matches = [a for a in args if type(a) is type(value) and a == value]
        if not matches:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint_text = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key}: must be one of {' | '.join(map(str, args))}, got {value!r}{hint_text}")
        return value
    if origin is tuple:  # tuple[str, ...]: a single string or a list of strings
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{key}: expected a string or a list of strings, got {value!r}")
        return tuple(items)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover
