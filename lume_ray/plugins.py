"""Plugins: the user's own code -> algorithms, metrics and samplers registered without editing the package.

Input:  plugin specs, as an experiment's ``plugins: [my_losses.py]`` (a ``.py`` file or a package directory,
        relative to the experiment file; or an importable module name) or ``lume-ray unlearn --plugin``.
Output: the specs resolved (:func:`resolve`: absolute paths, module names as given), the plugins imported once per
        process (:func:`load_plugins`: their ``@register_algorithm`` / ``@register_metric`` / ``@register_sampler``
        calls run, each registration recorded as the plugin's, checked by :func:`check_declarations`), and the
        runtime environment that ships them to a Ray cluster (:func:`runtime_env`). A failure is
        :class:`PluginError`, one line naming the plugin: not found, its own import error, a name already
        registered, a declaration that breaks the contract; nothing the plugin registered stays registered.

How the code reaches every process that looks a name up: each process imports the plugins itself, from the list
it is handed explicitly (an :class:`~lume_ray.config.Experiment`'s and an :class:`~lume_ray.config.UnlearnJob`'s
``plugins``, the evaluation pool's ``plugins``), before it looks a name up. On this machine (and on a shared
filesystem) a plugin file is imported from its path. Where the path does not exist (another node), the plugin is
imported by module name (the file's stem, the directory's name), which Ray's public
``runtime_env={"py_modules": [...]}`` makes importable: set when connecting to a cluster
(:func:`lume_ray.local_ray.ray_session`, :func:`runtime_env`). A submitted job gets its plugins through its
runtime environment too (the working directory, or ``py_modules``: :func:`lume_ray.cluster.upload.ship_plugins`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from lume_ray.registry import Registry, registering


class PluginError(ValueError):
    """A plugin that cannot be used: one line naming it."""


_loaded: dict[str, ModuleType] = {}  # spec -> module: each plugin is imported once per process


def is_path(spec: str) -> bool:
    """A file or directory (``my_losses.py``, ``./plugins/mine``), not a module name (``my_pkg.losses``)."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec or spec.startswith(".")


def module_name(spec: str) -> str:
    """The name the plugin is imported under: a file's stem, a directory's name, a module name as given."""
    return Path(spec.rstrip("/\\")).stem if is_path(spec) else spec


def resolve(specs: Iterable[str], base_dir: str | Path) -> tuple[str, ...]:
    """Path specs made absolute against ``base_dir`` (the experiment file's directory); module names unchanged.
    (A path that does not exist where it is imported is looked up by its module name: a job's py_modules.)"""
    out = []
    for spec in specs:
        if is_path(spec):
            path = Path(spec).expanduser()
            out.append(str((path if path.is_absolute() else Path(base_dir) / path).resolve()))
        else:
            out.append(spec)
    return tuple(out)


def _registries() -> list[Registry[Any]]:
    from lume_ray.algorithms import ALGORITHMS  # heavy: torch (a plugin registers into these anyway)
    from lume_ray.evaluate.metrics import METRICS
    from lume_ray.search.samplers import SAMPLERS

    return [ALGORITHMS, METRICS, SAMPLERS]


def registered_by(spec: str) -> dict[str, list[str]]:
    """kind -> the names the plugin ``spec`` registered (kinds: algorithm, metric, sampler)."""
    return {r.kind: [n for n in r if r.source(n) == spec] for r in _registries()}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _same_file(module: ModuleType, path: Path) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        return False
    target = path / "__init__.py" if path.is_dir() else path
    try:
        return Path(file).resolve() == target.resolve() or Path(file).read_bytes() == target.read_bytes()
    except OSError:
        return False


def _import_file(spec: str, path: Path) -> ModuleType:
    name = module_name(spec)
    existing = sys.modules.get(name)
    if existing is not None:
        if _same_file(existing, path):
            return existing
        raise PluginError(f"plugin {spec}: its module name {name!r} is taken by "
                          f"{getattr(existing, '__file__', None) or 'a built-in module'}; rename the plugin")
    if path.is_dir():
        init = path / "__init__.py"
        if not init.is_file():
            raise PluginError(f"plugin {spec}: a directory plugin needs an __init__.py")
        found = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(path)])
    else:
        found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise PluginError(f"plugin {spec}: not a Python file")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        found.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import(spec: str) -> ModuleType:
    if is_path(spec):
        path = Path(spec).expanduser()
        if path.exists():
            return _import_file(spec, path)
        try:  # not on this machine: shipped under its module name (a job's or a connection's py_modules)
            return importlib.import_module(module_name(spec))
        except ModuleNotFoundError as e:
            if e.name != module_name(spec):
                raise
            raise PluginError(f"plugin {spec}: file not found") from None
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name is not None and spec.startswith(e.name):
            raise PluginError(f"plugin {spec}: no such file or importable module") from None
        raise


def load_plugin(spec: str) -> ModuleType:
    """Import one plugin (once per process); its registrations are recorded as ``spec``'s and checked. Any failure
    -> :class:`PluginError` (one line), with everything it registered unregistered again."""
    if spec in _loaded:
        return _loaded[spec]
    registries = _registries()
    before = {id(r): set(r) for r in registries}
    modules_before = set(sys.modules)
    try:
        with registering(spec):
            module = _import(spec)
        check_declarations(spec)
    except BaseException as e:
        for r in registries:
            for name in set(r) - before[id(r)]:
                r.pop(name)
        if module_name(spec) not in modules_before:  # imported anew: a retry imports (and registers) again
            sys.modules.pop(module_name(spec), None)
        if isinstance(e, PluginError):
            raise
        if isinstance(e, Exception):
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if message.startswith(f"{spec}: "):  # the registry's duplicate-name error names the plugin already
                raise PluginError(f"plugin {message}") from None
            raise PluginError(f"plugin {spec}: import failed ({_first_line(e)})") from None
        raise
    _loaded[spec] = module
    return module


def load_plugins(specs: Sequence[str]) -> list[ModuleType]:
    """Import every plugin in ``specs`` (resolved: see :func:`resolve`) in order; see :func:`load_plugin`."""
    return [load_plugin(spec) for spec in specs]


def _positional(fn: Any, n: int) -> bool:
    """``fn`` can be called with ``n`` positional arguments."""
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): trust it
        return True
    return True


def check_declarations(spec: str) -> None:
    """What a registration must be, checked at import (before any model exists): a plugin registers something;
    an algorithm's function takes (model, forget, retain, ref_model, params), its parameter defaults are numbers or
    strings and its constraints name them; a metric's function takes (inputs, done); a sampler's takes (ctx)."""
    from lume_ray.algorithms import ALGORITHMS
    from lume_ray.evaluate.metrics import METRICS
    from lume_ray.search.samplers import SAMPLERS

    names = registered_by(spec)
    if not any(names.values()):
        raise PluginError(f"plugin {spec}: registers no algorithm, metric or sampler (use @register_algorithm, "
                          "@register_metric or @register_sampler)")
    for name in names["algorithm"]:
        alg = ALGORITHMS[name]
        where = f"plugin {spec}: algorithm {name!r}"
        if not callable(alg.fn) or not _positional(alg.fn, 5):
            raise PluginError(f"{where}: the loss must take (model, forget, retain, ref_model, params)")
        bad = [k for k, v in alg.params.items() if isinstance(v, bool) or not isinstance(v, int | float | str)]
        if bad:
            raise PluginError(f"{where}: parameter {bad[0]!r} default {alg.params[bad[0]]!r} must be a number or "
                              "a string")
        unknown = [k for k in (*alg.positive, *alg.nonnegative, *alg.choices) if k not in alg.params]
        if unknown:
            raise PluginError(f"{where}: constraint on {unknown[0]!r}, which is not a declared parameter "
                              f"(declared: {', '.join(alg.params) or 'none'})")
        if alg.check is not None and not _positional(alg.check, 2):
            raise PluginError(f"{where}: check must take (params, model_config)")
    for name in names["metric"]:
        if not _positional(METRICS[name].fn, 2):
            raise PluginError(f"plugin {spec}: metric {name!r}: the function must take (inputs, done)")
    for name in names["sampler"]:
        if not _positional(SAMPLERS[name], 1):
            raise PluginError(f"plugin {spec}: sampler {name!r}: the function must take (ctx)")


def runtime_env(specs: Sequence[str]) -> dict[str, Any]:
    """Ray's ``runtime_env`` that makes the plugin files of ``specs`` importable, by module name, in every process
    of a cluster (``py_modules``: a ``.py`` file or a package directory); {} when there are none here."""
    modules = [spec for spec in specs if is_path(spec) and Path(spec).exists()]
    return {"py_modules": modules} if modules else {}


def unload(spec: str) -> None:
    """Unregister what ``spec`` registered and forget it was imported (tests load a plugin for a while)."""
    for r in _registries():
        for name in [n for n in r if r.source(n) == spec]:
            r.pop(name)
    module = _loaded.pop(spec, None)
    if module is not None and sys.modules.get(module.__name__) is module:
        del sys.modules[module.__name__]
