"""Registry: a name -> one registered thing (an algorithm, a metric, a sampler), the one list of its choices.

Input:  ``@REGISTRY.register(name)`` above a function, or ``REGISTRY.add(name, obj)``.
Output: ``REGISTRY.get(name)`` (a ValueError naming the valid choices when unknown), ``REGISTRY.names()``
        (the choices, for help texts and validation errors); a registry also reads as a read-only mapping
        (``name in R``, ``R[name]``, iteration in registration order) and ``pop`` unregisters.

The shape lm-evaluation-harness uses for its models, tasks and metrics: registering a thing is one decorated
function, and every place that lists the choices reads them from here, so nothing else has to be edited.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, KeysView, ValuesView
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> ``T``, in registration order. ``kind`` names the things in messages ("unknown sampler 'x'");
    ``error`` is the ValueError subclass raised; ``sort`` lists the choices alphabetically in messages and
    :meth:`names` (else in registration order)."""

    def __init__(self, kind: str, *, error: type[ValueError] = ValueError, sort: bool = False) -> None:
        self.kind = kind
        self.error = error
        self.sort = sort
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name``; a name registered twice is an error."""
        if name in self._items:
            raise self.error(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        return obj

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
