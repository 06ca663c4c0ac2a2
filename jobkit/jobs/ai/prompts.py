"""Prompt templates filled with an item's fields: `str.format` limited to plain names, or sandboxed Jinja2.

A template comes from the payload, so it is untrusted: `{item.__class__}` or `{x[0]}` would reach into Python
objects through str.format, so only plain field names are allowed; Jinja2 runs in its SandboxedEnvironment.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._registry import shorten
from .errors import AISetupError

__all__ = ["MissingField", "Template", "compile_template"]


class MissingField(Exception):
    """An item lacks a field its template uses (the item fails, not the batch)."""


class _PlainFormatter(string.Formatter):
    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if not field_name.isidentifier():
            raise AISetupError(f"template field {{{shorten(field_name, 40)}}} is not a plain name: templates use"
                               " {field} only (no attributes, indexes or positions); use template='jinja2' for more")
        try:
            return kwargs[field_name], field_name
        except KeyError:
            raise MissingField(f"the item has no field {field_name!r}") from None


_FORMATTER = _PlainFormatter()
Template = Callable[[Mapping[str, Any]], str]


def _check_format(text: str) -> None:
    try:
        for _, name, spec, _ in _FORMATTER.parse(text):
            if name is not None and not name.isidentifier():
                raise AISetupError(f"template field {{{shorten(name, 40)}}} is not a plain name: templates use"
                                   " {field} only (no attributes, indexes or positions); use template='jinja2'")
            if spec and "{" in spec:
                raise AISetupError("template format specs cannot hold fields of their own")
    except ValueError as exc:
        raise AISetupError(f"template {shorten(text)!r} is not a valid str.format template ({exc}); write literal"
                           " braces as {{ and }}") from None


def _jinja(text: str) -> Template:
    try:
        from jinja2 import StrictUndefined, TemplateError, UndefinedError
        from jinja2.sandbox import SandboxedEnvironment
    except ImportError:
        raise AISetupError("template='jinja2' needs Jinja2 in the worker: pip install jinja2 (or jobkit[ai])") from None
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    try:
        compiled = env.from_string(text)
    except TemplateError as exc:
        raise AISetupError(f"Jinja2 template {shorten(text)!r} does not compile: {exc}") from None

    def render(item: Mapping[str, Any]) -> str:
        try:
            return compiled.render(**item)
        except UndefinedError as exc:
            raise MissingField(str(exc)) from None
        except TemplateError as exc:
            raise MissingField(f"the template failed on this item: {exc}") from None

    return render


def compile_template(text: str, engine: str) -> Template:
    """Check `text` now (a bad template fails the job before any call), and return its renderer."""
    if engine == "jinja2":
        return _jinja(text)
    _check_format(text)

    def render(item: Mapping[str, Any]) -> str:
        return _FORMATTER.vformat(text, (), item)

    return render
