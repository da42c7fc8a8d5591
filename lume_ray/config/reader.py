"""Reading a user's YAML: a file or a text -> plain data, strictly. A key given twice in one mapping, a byte that is
not UTF-8 and a syntax error are each a one-line :class:`ConfigError` naming the file (or flag), the line and the key.

Input:  a YAML file (an experiment, RUN_DIR/experiment.yaml) or a text (a ``--set`` value, a flag's value).
Output: the parsed data (:func:`read_yaml`, :func:`parse_yaml`). PyYAML's ``safe_load`` keeps the last of two equal
        keys silently; :class:`StrictLoader` (a SafeLoader) refuses them. Every YAML lume-ray reads from a user is
        read here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lume_ray.errors import ConfigError


class DuplicateKey(yaml.YAMLError):
    """A mapping gives the same key twice (its message: ``line N: key 'k' given twice (first at line M)``)."""


class StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (safe_load keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges by design
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                break
            if first is not None:
                raise DuplicateKey(f"line {line}: key {key!r} given twice (first at line {first})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """``text`` parsed as YAML; a syntax error or a repeated key -> ConfigError ``SOURCE: ...`` (one line)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506  # StrictLoader is a SafeLoader
    except DuplicateKey as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}: {where}not valid YAML ({problem})") from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file parsed: a missing file, a non-UTF-8 byte, a syntax error or a repeated key -> one-line
    ConfigError naming the file (and the line where known)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {'is a directory, not a YAML file' if path.is_dir() else 'file not found'}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    return parse_yaml(text, str(path))
