"""Recipes as frozen dataclasses whose defaults are the published configuration; `zoo train --set key=value`
overrides one field, parsed as that field's type (bool, int, float, str, or a comma-separated tuple)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from common.errors import InputError

R = TypeVar("R")


def parse_value(raw: Any, kind: type) -> Any:
    """`raw` (a string from the command line, or already a value) as `kind`."""
    if not isinstance(raw, str):
        return raw
    if kind is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError("expected true/false")
        return raw.lower() in ("true", "1")
    if kind is tuple:
        return tuple(x for x in raw.split(",") if x)
    return kind(raw)


def with_overrides(cls: type[R], overrides: Mapping[str, Any]) -> R:
    """`cls(**overrides)` with each value parsed as its field's type; an unknown key or a bad value is an
    InputError naming it (with the known keys)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise InputError(None, f"unknown recipe key {key!r}; known: {', '.join(fields)}")
        try:
            values[key] = parse_value(raw, type(fields[key].default))
        except ValueError as e:
            raise InputError(None, f"recipe key {key}={raw!r}: {e}") from None
    try:
        return cls(**values)
    except ValueError as e:
        raise InputError(None, f"recipe: {e}") from None
