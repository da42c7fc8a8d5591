"""Config loading: an experiment YAML (+ ``key.path=value`` overrides), or a mapping -> a validated model, and
any pydantic error -> one line.

Input:  ``experiments/<name>.yaml`` and ``--set`` overrides (values parsed as YAML: ``sweep.algorithms=[ga,npo]``),
        or a raw mapping and the model to validate it as.
Output: :func:`load_experiment` / :func:`experiment_from_dict` (an :class:`Experiment`), :func:`validate` (any
        section); a failure is :class:`ConfigError`, ``SOURCE: key.path: what is wrong (got VALUE; valid: ...)``.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lume_ray.config.base import Section
from lume_ray.config.experiment import Experiment
from lume_ray.config.reader import DuplicateKey, StrictLoader, read_yaml
from lume_ray.errors import ConfigError


def apply_overrides(raw: dict[str, Any], overrides: Sequence[tuple[str, str]], source: str = "--set") -> dict[str, Any]:
    """``a.b.c=value`` overrides (values parsed as YAML) applied to a copy of the raw mapping."""
    out = copy.deepcopy(raw)
    for key, text in overrides:
        try:
            value = yaml.load(text, Loader=StrictLoader) if text != "" else None  # noqa: S506  # a SafeLoader
        except DuplicateKey as e:
            raise ConfigError(f"{source} {key}={text}: {str(e).removeprefix('line 1: ')}") from None
        except yaml.YAMLError:
            raise ConfigError(f"{source} {key}={text}: value is not valid YAML") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"{source} {key}: {part!r} is not a mapping")
            node = node[part]
        node[parts[-1]] = value
    return out


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str] | None:
    """The valid keys of the model found at ``loc`` (for "unknown key" errors)."""
    current: Any = model
    for part in loc:
        if isinstance(current, _Keyed):  # a key of a dict[str, Model] field (algorithms.npo)
            current = current.model
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            annotation = current.model_fields[part].annotation
            is_dict = typing.get_origin(annotation) is dict
            current = _Keyed(_model_in(typing.get_args(annotation)[1])) if is_dict else _model_in(annotation)
        else:
            return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


class _Keyed(typing.NamedTuple):
    model: Any


def _model_in(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def one_line(error: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    """The first pydantic error as ``SOURCE: key.path: what is wrong (got VALUE; valid: ...)``."""
    err = error.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    where = ".".join(loc) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        valid = _fields_at(model, loc[:-1])
        extra = f" (valid: {', '.join(valid)})" if valid else ""
        return ConfigError(f"{source}: {where}: unknown key{extra}")
    if err["type"] == "missing":
        return ConfigError(f"{source}: {where}: missing (required)")
    got = "" if isinstance(value, Mapping) or err["type"].startswith("value_error") else f" (got {value!r})"
    return ConfigError(f"{source}: {where}: {msg}{got}")


def validate(model: type[Section], raw: Mapping[str, Any], source: str) -> Any:
    """``model`` from ``raw``; any problem -> one-line :class:`ConfigError` naming ``source``."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise one_line(e, model, source) from None
    except (ArithmeticError, TypeError, LookupError) as e:  # a validator's arithmetic on a value it cannot use
        raise ConfigError(f"{source}: a value cannot be used ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def load_experiment(path: str | Path, overrides: Sequence[tuple[str, str]] = ()) -> Experiment:
    """Read, override and validate an experiment YAML: the only place an experiment is checked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found" + (" (a directory)" if path.is_dir() else ""))
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return experiment_from_dict(apply_overrides(raw, overrides), str(path), base_dir=path.parent)


def experiment_from_dict(raw: Mapping[str, Any], source: str = "<dict>", base_dir: str | Path = ".") -> Experiment:
    """``raw`` validated as an :class:`Experiment`; its ``plugins`` paths are relative to ``base_dir`` (the
    experiment file's directory) and are imported before its algorithm names are checked."""
    plugins = raw.get("plugins")
    if plugins is not None:
        if isinstance(plugins, str) or not isinstance(plugins, Sequence) or not all(isinstance(p, str) for p in plugins):
            raise ConfigError(f"{source}: plugins: expected a list of .py files or module names (got {plugins!r})")
        from lume_ray.plugins import PluginError, load_plugins, resolve  # heavy: torch, only with plugins

        raw = {**raw, "plugins": list(resolve(plugins, base_dir))}
        try:  # before anything is validated: sweep.sampler, sweep.objectives and algorithms may name theirs
            load_plugins(raw["plugins"])
        except PluginError as e:
            raise ConfigError(f"{source}: plugins: {e}") from None
    return validate(Experiment, raw, source)  # type: ignore[no-any-return]
