"""What every frozen config dataclass of the package shares: the round trip through plain dicts.

Configs travel as plain dicts (YAML files, ``results/`` JSON, Ray workers), so each one
converts to builtins (tuples become lists) and back, and an unknown key is an error that
names the key and the known fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from rl_isac.errors import ConfigError

C = TypeVar("C", bound="ConfigMixin")


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class ConfigMixin:
    """``to_dict`` / ``from_dict`` / ``replace`` for a frozen, validated dataclass."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (lists for tuples)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(key, data[key], f"unknown field; known fields: {sorted(known)}")
        return cls(**data)

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)
