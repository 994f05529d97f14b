"""One behaviour for every config dataclass: a JSON-ready dict out, a strict constructor in.

Configs travel inside checkpoints, run directories and saved models as JSON. Reading one back
must fail loudly on a field this version does not know (a typo, or a config from a newer
banana) rather than drop it, and must turn JSON lists back into the tuples the dataclass uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T", bound="SerializableConfig")


class SerializableConfig:
    """Mix into a ``@dataclass``: ``to_dict()`` and strict ``from_dict()``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
