"""From sheet cells to row models: which model, which column feeds which field, and how cells are coerced.

Excel hands over numbers for dates (serials), text for numbers ("1,234"), 1/0 or "yes" for booleans and
blank cells; each field gets a small coercer chosen once from its annotation, then pydantic validates.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from openpyxl.utils.datetime import from_excel  # type: ignore[import-untyped]
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .._registry import Registry
from .errors import ImportSetupError, WorkbookError
from .models import RowError
from .sheet import NO_CACHED_VALUE, CellError, column_letter

__all__ = [
    "Columns", "RowBuilder", "base_types", "header_text", "json_value", "map_columns", "register_row_model",
    "resolve_row_model",
]

M = TypeVar("M", bound=type[BaseModel])
_models: Registry[type[BaseModel]] = Registry("row model", "jobkit.jobs.register_row_model(Model)", ImportSetupError)


def register_row_model(model: M, name: str | None = None) -> M:
    """Make `model` usable as `row_model=name` (default: the class name) or by its import path; a class decorator."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"register_row_model needs a pydantic BaseModel subclass, not {model!r}")
    _models.add(model, name)
    return model


def resolve_row_model(ref: str) -> type[BaseModel]:
    """The model registered as `ref`: a payload names one, it never imports one."""
    return _models.get(ref)


# -- which column feeds which field -------------------------------------------------------------------------------

def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.casefold())


def _input_key(name: str, info: FieldInfo, by_name: bool) -> str:
    alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
    return name if by_name or not alias else alias


@dataclass(frozen=True)
class Columns:
    """The header row resolved: for each used sheet column, its header and the model field it feeds."""

    by_column: dict[int, tuple[str, str]]  # sheet column -> (header, field name)
    unused: list[str]  # headers that feed no field

    def header_of(self, field: str) -> str | None:
        return next((h for h, f in self.by_column.values() if f == field), None)


def map_columns(headers: dict[int, Any], model: type[BaseModel], mapping: dict[str, str], sheet: str) -> Columns:
    """Match header cells to model fields (explicit `mapping` first, then by name, ignoring case and spacing)."""
    fields = model.model_fields
    names = {str(h).strip(): col for col, h in headers.items() if h is not None and str(h).strip()}
    by_column: dict[int, tuple[str, str]] = {}
    for header, field in mapping.items():
        if field not in fields:
            raise ImportSetupError(f"columns maps {header!r} to {field!r}, which is not a field of {model.__name__}"
                                   f" (fields: {', '.join(fields)})")
        col = names.get(header.strip())
        if col is None:
            loose = [c for h, c in names.items() if _norm(h) == _norm(header)]
            col = loose[0] if len(loose) == 1 else None
        if col is None:
            raise WorkbookError(f"sheet {sheet!r} has no column {header!r} (named in columns=); its headers are:"
                                f" {_listing(names)}")
        by_column[col] = (header_text(headers[col]), field)
    mapped = {f for _, f in by_column.values()}
    wanted = {_norm(name): name for name in fields if name not in mapped}
    wanted.update({_norm(i.alias): n for n, i in fields.items() if i.alias and n not in mapped})
    for col, header in sorted(headers.items()):
        text = header_text(header)
        if col not in by_column and text and _norm(text) in wanted:
            by_column[col] = (text, wanted[_norm(text)])
    _check_duplicates(by_column, sheet)
    used = {f for _, f in by_column.values()}
    missing = [n for n, i in fields.items() if i.is_required() and n not in used]
    if missing:
        raise WorkbookError(f"sheet {sheet!r} lacks required column(s) {', '.join(repr(m) for m in missing)} for"
                            f" {model.__name__}; its headers are: {_listing(names)} (rename the headers, or map them"
                            " with columns={'Sheet header': 'field'})")
    unused = [header_text(h) for c, h in sorted(headers.items()) if c not in by_column and header_text(h)]
    return Columns(by_column, unused)


def header_text(value: Any) -> str:
    if value is None or value is NO_CACHED_VALUE or isinstance(value, CellError):
        return ""
    return str(value).strip()


def _listing(names: dict[str, int]) -> str:
    return ", ".join(repr(n) for n in names) or "none"


def _check_duplicates(by_column: dict[int, tuple[str, str]], sheet: str) -> None:
    seen: dict[str, list[int]] = {}
    for col, (_, field) in by_column.items():
        seen.setdefault(field, []).append(col)
    dups = {f: cols for f, cols in seen.items() if len(cols) > 1}
    if dups:
        detail = "; ".join(
            f"{f!r} from columns {', '.join(f'{column_letter(c)} {by_column[c][0]!r}' for c in cols)}"
            for f, cols in dups.items())
        raise WorkbookError(f"sheet {sheet!r} has duplicate headers for the same field: {detail}; rename or remove"
                            " the extra columns, or map one of them explicitly with columns=")


# -- cell coercion ------------------------------------------------------------------------------------------------

Coercer = Callable[[Any], Any]
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")
_INTEGRAL = re.compile(r"^([+-]?\d+)\.0*$")
_SPACES = str.maketrans("", "", " \u00a0\u202f\u2009")


def base_types(annotation: Any) -> set[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return base_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: set[Any] = set()
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                out |= base_types(arg)
        return out
    return {annotation}


def _clean_number(text: str) -> str:
    text = text.strip().translate(_SPACES)
    return text.replace(",", "") if _THOUSANDS.match(text) else text


def _serial(value: Any, epoch: dt.datetime) -> Any:
    try:
        return from_excel(value, epoch)
    except (OverflowError, ValueError):
        return value


def _coercer(annotation: Any, epoch: dt.datetime) -> Coercer | None:
    kinds = base_types(annotation)
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    if kind is dt.datetime:
        return lambda v: (_serial(v, epoch) if isinstance(v, int | float) and not isinstance(v, bool)
                          else dt.datetime.combine(v, dt.time()) if type(v) is dt.date else v)
    if kind is dt.date:
        def to_date(v: Any) -> Any:
            if isinstance(v, int | float) and not isinstance(v, bool):
                v = _serial(v, epoch)
            if isinstance(v, dt.datetime) and v.time() == dt.time():
                return v.date()
            return v
        return to_date
    if kind is int:
        def to_int(v: Any) -> Any:
            if isinstance(v, float) and v.is_integer():
                return int(v)
            if isinstance(v, str):
                v = _clean_number(v)
                m = _INTEGRAL.match(v)
                return m.group(1) if m else v
            return v
        return to_int
    if kind in (float, decimal.Decimal):
        return lambda v: _clean_number(v) if isinstance(v, str) else v
    if kind is str:
        return _to_str
    return None


def _to_str(v: Any) -> Any:
    if isinstance(v, str) or v is None:
        return v
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    return v


def json_value(value: Any) -> Any:
    """A cell value as JSON can hold it (for reports and checkpoints)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, CellError):
        return value.code
    return str(value)


# -- a row of cells to a model, or errors -------------------------------------------------------------------------

class RowBuilder:
    """Turns one row's cells into a model instance, or the row's errors."""

    def __init__(self, model: type[BaseModel], columns: Columns, epoch: dt.datetime, sheet_name: str) -> None:
        self.model = model
        self.columns = columns
        self.sheet_name = sheet_name
        by_name = bool(model.model_config.get("populate_by_name") or model.model_config.get("validate_by_name"))
        fields = model.model_fields
        self.plan: list[tuple[int, str, str, Coercer | None]] = [
            (col, header, _input_key(field, fields[field], by_name), _coercer(fields[field].annotation, epoch))
            for col, (header, field) in sorted(columns.by_column.items())
        ]
        self.key_to_field = {key: columns.by_column[col][1] for col, _, key, _ in self.plan}
        self.key_to_column = {key: col for col, _, key, _ in self.plan}
        self.header_of_key = {key: header for _, header, key, _ in self.plan}

    def build(self, row_no: int, cells: dict[int, Any]) -> BaseModel | list[RowError] | None:
        """The row as a model; its errors; or None for a blank row."""
        data: dict[str, Any] = {}
        problems: list[RowError] = []
        for col, header, key, coerce in self.plan:
            value = cells.get(col)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if value is NO_CACHED_VALUE:
                raise WorkbookError(
                    f"cell {column_letter(col)}{row_no} (column {header!r}) of sheet {self.sheet_name!r} holds a"
                    " formula with no saved value: the file was written by a program that does not calculate"
                    " formulas. Open it in Excel or LibreOffice and save it again, or paste values over the formulas")
            if isinstance(value, CellError):
                problems.append(RowError(row=row_no, column=header, field=self.key_to_field[key],
                                         message=f"the cell shows the Excel error {value.code}", value=value.code))
                continue
            data[key] = coerce(value) if coerce is not None else value
        if not data and not problems:
            return None
        if problems:
            return problems
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            return [self._error(row_no, e, cells) for e in exc.errors(include_url=False)]

    def _error(self, row_no: int, err: Any, cells: dict[int, Any]) -> RowError:
        key = err["loc"][0] if err["loc"] else None
        field = self.key_to_field.get(key) if isinstance(key, str) else None
        header = self.header_of_key.get(key) if isinstance(key, str) else None
        if header is None and field is None and isinstance(key, str):
            field = key
        col = self.key_to_column.get(key) if isinstance(key, str) else None
        value = json_value(cells.get(col)) if col is not None else None
        return RowError(row=row_no, column=header, field=field, message=err["msg"], value=value)
