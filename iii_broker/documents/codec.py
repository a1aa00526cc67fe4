"""The packed form of a JSON value: how state and stream values sit in Redis.

Atomic updates run in Redis's Lua, whose JSON library (cjson) would corrupt values that
pass through it untouched: it re-encodes numbers with 14 significant digits
(``0.30000000000000004`` becomes ``0.3``, ``2**60`` becomes ``1.1529215046855e+18``) and
cannot tell ``[]`` from ``{}``. So values are stored *packed*, a JSON shape cjson carries
unchanged:

- a number is the string ``"\\u0000n<digits>"`` (its exact decimal text),
- an array is the object ``{"\\u0000a": [...]}`` (an empty one may come back as
  ``{"\\u0000a": {}}``),
- a string, or an object key, that starts with NUL gets ``"\\u0000s"`` in front,
- objects, other strings, ``true``, ``false`` and ``null`` are themselves.

Only Python (:func:`pack`, :func:`unpack`) and the Lua in :mod:`.lua` know the form;
what a user sends and gets back is plain JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import InvalidArgument

NUL = "\x00"
NUMBER = "\x00n"
ESCAPED = "\x00s"
ARRAY = "\x00a"

MAX_VALUE_DEPTH = 128
"""Nesting a value may have: Lua's cjson refuses documents past 1,000 levels, and a
packed array takes two."""


def pack(value: Any, what: str = "value") -> str:
    """The packed JSON text of ``value``; raises :class:`InvalidArgument` for what JSON cannot
    carry (NaN, infinities, non-string keys, lone surrogates) or nesting past
    :data:`MAX_VALUE_DEPTH`, naming ``what``."""
    try:
        return json.dumps(tree(value, what), ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8").decode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{what} holds a string that is not valid Unicode "
                              f"(a lone surrogate): {exc.reason}") from None


def tree(value: Any, what: str = "value") -> Any:
    """``value`` in packed form, as a Python tree (to embed in a larger packed document)."""
    return _pack(value, what, 0)


def _pack(value: Any, what: str, depth: int) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return ESCAPED + value if value.startswith(NUL) else value
    if isinstance(value, int):
        return NUMBER + str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{what} holds {value!r}, which JSON cannot carry")
        return NUMBER + repr(value)
    if depth >= MAX_VALUE_DEPTH:
        raise InvalidArgument(f"{what} is nested deeper than {MAX_VALUE_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        return {ARRAY: [_pack(v, what, depth + 1) for v in value]}
    if isinstance(value, dict):
        packed = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidArgument(f"{what} has a key that is not a string: {k!r}")
            packed[ESCAPED + k if k.startswith(NUL) else k] = _pack(v, what, depth + 1)
        return packed
    raise InvalidArgument(f"{what} holds a {type(value).__name__}, which is not JSON")


def unpack(text: str) -> Any:
    """The plain value of packed JSON text."""
    return _unpack(json.loads(text))


def _unpack(value: Any) -> Any:
    if isinstance(value, str):
        if not value.startswith(NUL):
            return value
        if value.startswith(NUMBER):
            return number(value[2:])
        return value[2:]  # ESCAPED
    if isinstance(value, dict):
        if ARRAY in value and len(value) == 1:
            items = value[ARRAY]
            return [_unpack(v) for v in items] if isinstance(items, list) else []
        return {(k[2:] if k.startswith(NUL) else k): _unpack(v) for k, v in value.items()}
    return value


def number(text: str) -> int | float:
    """A packed number's value: an int when its text is an integer."""
    if any(c in text for c in ".eEnN"):  # nan/inf never get here; "-0" stays an int
        value = float(text)
        return value
    return int(text)


def packed_path(segments: list[str | int]) -> list[str | int]:
    """Path segments as they name keys in packed objects (NUL-led keys escaped)."""
    return [ESCAPED + s if isinstance(s, str) and s.startswith(NUL) else s for s in segments]
