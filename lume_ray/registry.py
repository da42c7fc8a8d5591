"""Registry: a name -> one registered thing (an algorithm, a metric, a sampler), the one list of its choices.

Input:  ``@REGISTRY.register(name)`` above a function, or ``REGISTRY.add(name, obj)``.
Output: ``REGISTRY.get(name)`` (a ValueError naming the valid choices when unknown), ``REGISTRY.names()``
        (the choices, for help texts and validation errors); a registry also reads as a read-only mapping
        (``name in R``, ``R[name]``, iteration in registration order) and ``pop`` unregisters.
        ``REGISTRY.source(name)``: who registered it ("lume_ray", or the plugin file being imported, as
        :func:`registering` says; :mod:`lume_ray.plugins`), so a name registered twice is refused naming both.

The shape lm-evaluation-harness uses for its models, tasks and metrics: registering a thing is one decorated
function, and every place that lists the choices reads them from here, so nothing else has to be edited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, ItemsView, Iterator, KeysView, ValuesView
from typing import Any, Generic, TypeVar

T = TypeVar("T")
BUILT_IN = "lume_ray"
_sources: list[str] = []  # the plugin being imported (innermost last); empty: the package itself


@contextlib.contextmanager
def registering(source: str) -> Iterator[None]:
    """Everything registered inside the block is recorded as registered by ``source`` (a plugin file)."""
    _sources.append(source)
    try:
        yield
    finally:
        _sources.pop()


class Registry(Generic[T]):
    """Name -> ``T``, in registration order. ``kind`` names the things in messages ("unknown sampler 'x'");
    ``error`` is the ValueError subclass raised; ``sort`` lists the choices alphabetically in messages and
    :meth:`names` (else in registration order)."""

    def __init__(self, kind: str, *, error: type[ValueError] = ValueError, sort: bool = False) -> None:
        self.kind = kind
        self.error = error
        self.sort = sort
        self._items: dict[str, T] = {}
        self._by: dict[str, str] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name``; a name registered twice is an error naming who registered it first."""
        source = _sources[-1] if _sources else BUILT_IN
        if name in self._items:
            first = self._by.get(name, BUILT_IN)
            where = "built in" if first == BUILT_IN else f"by {first}"
            prefix = "" if source == BUILT_IN else f"{source}: "
            raise self.error(f"{prefix}{self.kind} {name!r} is already registered ({where}); choose another name")
        self._items[name] = obj
        self._by[name] = source
        return obj

    def source(self, name: str) -> str:
        """Who registered ``name``: "lume_ray" (built in) or the plugin's file or module."""
        return self._by.get(name, BUILT_IN)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object itself as ``name``."""

        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def get(self, name: str) -> T:
        """The thing registered as ``name``; unknown -> ``error`` naming the valid choices."""
        try:
            return self._items[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r} (valid: {self.choices()})") from None

    def names(self) -> list[str]:
        """The registered names, as every help text and error lists them."""
        return sorted(self._items) if self.sort else list(self._items)

    def choices(self) -> str:
        """:meth:`names` joined with ", " (help texts, "(valid: ...)" messages)."""
        return ", ".join(self.names())

    def pop(self, name: str, default: Any = None) -> T | Any:
        """Unregister ``name`` (tests register a thing for a while); ``default`` when it is not registered."""
        self._by.pop(name, None)
        return self._items.pop(name, default)

    # -- a read-only mapping --------------------------------------------------------------------

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> KeysView[str]:
        return self._items.keys()

    def values(self) -> ValuesView[T]:
        return self._items.values()

    def items(self) -> ItemsView[str, T]:
        return self._items.items()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {self.choices()})"
