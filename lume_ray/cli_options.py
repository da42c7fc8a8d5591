"""Command-line options: config model -> argparse flags, and the option kinds every command shares.

Input:  a pydantic model (:class:`~lume_ray.config.UnlearnJob`, :class:`~lume_ray.config.EvalConfig`, ...) and an
        argparse parser; after parsing, the parsed namespace.
Output: the flags (:func:`add_model_options`: nested models flattened, ``train.workers`` -> ``--workers``, with
        each field's description as help), the given values as a nested mapping (:func:`nested`), the validated
        model or a one-line error that names the flag (:func:`validate_model`). Shared by the commands:
        :class:`Parser` (one-line errors), ``KEY=VALUE`` values (:func:`key_value`), finite numbers
        (:func:`finite_float`), repeatable ``--set`` (:func:`set_option`), ``-v`` / ``--mlflow``
        (:func:`console_options`).

A field added to a config model is a flag of its command, with no change here. Flags default to "not given",
so only what the user typed overrides the model's defaults. The command tree itself is :mod:`lume_ray.cli`'s.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints its usage first; ours says where to look)."""

    def error(self, message: str) -> NoReturn:
        print(f"lume-ray: error: {self.prog.removeprefix('lume-ray ')}: {message} (see {self.prog} --help)",
              file=sys.stderr)
        raise SystemExit(2)


def key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def finite_float(text: str) -> float:
    """A flag's number: finite (``nan``, ``inf`` are refused, as everywhere in the config)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
    return value


def set_option(parser: argparse.ArgumentParser, dest: str = "overrides",
               help: str = "override experiment keys, e.g. sweep.num_samples=40") -> None:
    """``--set KEY=VALUE ...``, repeatable: every ``--set`` adds to the list (plain nargs kept only the last one)."""
    parser.add_argument("--set", dest=dest, nargs="+", action="extend", type=key_value, default=[],
                        metavar="KEY=VALUE", help=help)


def console_options(parser: argparse.ArgumentParser, *, tracking: bool = False) -> None:
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's, Tune's, DeepSpeed's and Optuna's output live (always in OUT/logs/)")
    if tracking:
        parser.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                            help="log every trial to MLflow under a parent run (no URI: the experiment's, else "
                                 "sqlite:///RUN_DIR/mlruns/mlflow.db); put it after the experiment")


# ---------------------------------------------------------------------------------------------
# Options generated from the config models.

_SIMPLE = (int, float, str)


def _kind(annotation: Any) -> tuple[str, Any]:
    """("bool" | "simple" | "choice" | "model" | "yaml", detail) for a field's annotation."""
    from pydantic import BaseModel  # heavy: pydantic (`import lume_ray.cli` stays fast)

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "bool", None
    if origin is typing.Literal:
        return "choice", [str(a) for a in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if annotation in _SIMPLE or (origin in (typing.Union, types.UnionType) and args and all(a in _SIMPLE for a in args)):
        return "simple", None
    return "yaml", None


def add_model_options(parser: argparse.ArgumentParser, model: Any, *, path: str = "", skip: Sequence[str] = (),
                      flags: dict[str, str] | None = None) -> dict[str, str]:
    """One flag per field of ``model`` (nested models flattened: ``train.workers`` -> ``--workers``); returns
    {dotted key: flag}. Flags default to "not given", so only what the user typed overrides the model's
    defaults; values are validated by the model, not by argparse."""
    flags = {} if flags is None else flags
    for name, field in model.model_fields.items():
        key = f"{path}{name}"
        if key in skip or name in skip:
            continue
        kind, detail = _kind(field.annotation)
        if kind == "model":
            add_model_options(parser, detail, path=f"{key}.", skip=skip, flags=flags)
            continue
        flag = "--" + name.replace("_", "-")
        value = None if field.is_required() else field.get_default(call_default_factory=True)
        shown = value.describe() if value is not None and hasattr(value, "describe") else repr(value)
        default = "" if field.is_required() or "default" in (field.description or "") else f" (default: {shown})"
        help_text = (field.description or "").replace("%", "%%") + default
        if kind == "bool":
            parser.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=key, default=argparse.SUPPRESS, metavar=name.upper(),
                                required=field.is_required(), help=help_text + (
                                    f"; one of {', '.join(detail)}" if kind == "choice" else ""),
                                type=_yaml_value if kind in ("yaml", "choice") else str)
        flags[key] = flag
    return flags


def _yaml_value(text: str) -> Any:
    import yaml  # heavy: ~10 ms, only when a flag is given (`import lume_ray.cli` stays fast)

    from lume_ray.config.reader import DuplicateKey, StrictLoader

    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506  # a SafeLoader that refuses repeated keys
    except DuplicateKey as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {str(e).removeprefix('line 1: ')}") from None
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid value") from None


def nested(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    """The given flags as a nested mapping ``{"train": {"workers": "2"}, "lr": "1e-3"}``."""
    out: dict[str, Any] = {}
    for key in flags:
        if key in vars(args):
            node = out
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = getattr(args, key)
    return out


def validate_model(model: Any, raw: dict[str, Any], command: str, flags: dict[str, str]) -> Any:
    """The model, or a one-line error that names the flag (``--workers``) rather than the key."""
    from lume_ray.config import ConfigError, validate  # heavy: pydantic, as in _kind

    try:
        return validate(model, raw, f"lume-ray {command}")
    except ConfigError as e:
        message = str(e)
        for key, flag in sorted(flags.items(), key=lambda kv: -len(kv[0])):
            message = message.replace(f": {key}:", f": {flag}:").replace(f": {key}.", f": {flag} ")
        raise ConfigError(message) from None


__all__ = ["Parser", "add_model_options", "console_options", "finite_float", "key_value", "nested", "set_option",
           "validate_model"]
