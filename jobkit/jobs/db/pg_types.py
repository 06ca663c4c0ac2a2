"""Values as asyncpg's binary COPY takes them, chosen once per column from its PostgreSQL type.

Rows arrive as JSON values (numbers, strings, ISO dates as text...) or, from a CSV file, as text; each column
gets a small converter, so `"2024-03-01"` reaches a `date` column as a date and `"42"` an `integer` as 42.
A value that cannot be converted raises ValueError; the caller names the row and column.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["Converter", "bulk_converter", "converter", "ready_types", "str_only"]

Converter = Callable[[Any], Any]
_INTS = {"int2", "int4", "int8"}
_FLOATS = {"float4", "float8"}
_TEXTS = {"text", "varchar", "bpchar", "name", "citext"}
_TRUE = {"t", "true", "y", "yes", "on", "1"}
_FALSE = {"f", "false", "n", "no", "off", "0"}


def _kind(v: Any) -> str:
    return type(v).__name__


def _int(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
        return int(v.strip())
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, decimal.Decimal) and v.is_finite() and v == v.to_integral_value():
        return int(v)
    raise ValueError(f"expected an integer, got {_kind(v)} {v!r}")


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str | decimal.Decimal):
        raise ValueError(f"expected a number, got {_kind(v)} {v!r}")
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"expected a number, got {v!r}") from None


def _decimal(v: Any) -> decimal.Decimal:
    if isinstance(v, bool) or not isinstance(v, int | float | str | decimal.Decimal):
        raise ValueError(f"expected a number, got {_kind(v)} {v!r}")
    try:
        return v if isinstance(v, decimal.Decimal) else decimal.Decimal(str(v).strip())
    except decimal.InvalidOperation:
        raise ValueError(f"expected a number, got {v!r}") from None


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower() if isinstance(v, str | int) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {_kind(v)} {v!r}")


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    return str(v)


def _iso(text: str) -> str:
    text = text.strip()
    return text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text  # Python 3.10 reads no "Z"


def _date(v: Any) -> dt.date:
    if isinstance(v, str):
        try:
            return dt.date.fromisoformat(v.strip())
        except ValueError:
            v = dt.datetime.fromisoformat(_iso(v))  # "2024-03-01T00:00:00" is a date too
    if isinstance(v, dt.datetime):
        if v.time() != dt.time(0):
            raise ValueError(f"expected a date, got a date and time {v.isoformat()}")
        return v.date()
    if isinstance(v, dt.date):
        return v
    raise ValueError(f"expected a date, got {_kind(v)} {v!r}")


def _datetime(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    if isinstance(v, str):
        return dt.datetime.fromisoformat(_iso(v))
    raise ValueError(f"expected a date and time, got {_kind(v)} {v!r}")


def _timestamp(v: Any) -> dt.datetime:
    value = _datetime(v)
    return value if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _timestamptz(v: Any) -> dt.datetime:
    value = _datetime(v)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def _time(v: Any) -> dt.time:
    if isinstance(v, dt.time):
        return v
    if isinstance(v, str):
        return dt.time.fromisoformat(_iso(v))
    raise ValueError(f"expected a time of day, got {_kind(v)} {v!r}")


def _uuid(v: Any) -> uuid.UUID:
    return v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))


def _bytes(v: Any) -> bytes:
    if isinstance(v, bytes | bytearray):
        return bytes(v)
    if isinstance(v, str) and v.startswith("\\x"):
        return bytes.fromhex(v[2:])
    raise ValueError(f"expected bytes, or text in PostgreSQL's hex form '\\x0a1b', got {_kind(v)}")


def _json_value(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def _json_text(v: Any) -> str:
    if not isinstance(v, str):
        return _json_value(v)
    json.loads(v)  # refuse text that is not JSON here, where the row and column can be named
    return v


_BY_TYPE: dict[str, Converter] = {
    **dict.fromkeys(_INTS, _int), **dict.fromkeys(_FLOATS, _float), **dict.fromkeys(_TEXTS, _text),
    "numeric": _decimal, "bool": _bool, "date": _date, "timestamp": _timestamp, "timestamptz": _timestamptz,
    "time": _time, "uuid": _uuid, "bytea": _bytes,
}


def converter(typname: str, text_values: bool) -> Converter | None:
    """The converter for a column of type `typname` (pg_type.typname), or None to pass values as they are.

    `text_values`: values are the columns' text (a CSV file), so a json/jsonb value is JSON text, not a string.
    """
    if typname in ("json", "jsonb"):
        return _json_text if text_values else _json_value
    return _BY_TYPE.get(typname)


_READY: dict[str, frozenset[type]] = {
    **dict.fromkeys(_INTS, frozenset({int})), **dict.fromkeys(_FLOATS, frozenset({float})),
    **dict.fromkeys(_TEXTS, frozenset({str})), "bool": frozenset({bool}), "numeric": frozenset({decimal.Decimal}),
    "date": frozenset({dt.date}), "uuid": frozenset({uuid.UUID}), "bytea": frozenset({bytes}),
}


def ready_types(typname: str, text_values: bool) -> frozenset[type]:
    """Python types a column of type `typname` takes as they are (no converter call); None always."""
    return frozenset({type(None)}) | (frozenset() if typname in ("json", "jsonb") else _READY.get(typname, frozenset()))


_BULK: dict[str, Callable[[str], Any]] = {"date": dt.date.fromisoformat, "uuid": uuid.UUID}


def bulk_converter(typname: str) -> Callable[[str], Any] | None:
    """A C-level function converting the plain text form of a `typname` value, for a column of text only."""
    return _BULK.get(typname)


def str_only(values: tuple[Any, ...]) -> bool:
    return {str}.issuperset(map(type, values))
