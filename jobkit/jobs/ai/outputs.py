"""Structured output: response models a payload may name (registered by the worker's code), the request's JSON schema,
validation of an answer, and the re-ask that tells the model what was wrong."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .._registry import Registry
from .errors import AISetupError

__all__ = ["Invalid", "parse_answer", "register_response_model", "reask_message", "resolve_response_model",
           "response_format"]

M = TypeVar("M", bound=type[BaseModel])
_models: Registry[type[BaseModel]] = Registry("response model", "jobkit.jobs.ai.register_response_model(Model)",
                                              AISetupError)
ERRORS_SHOWN = 5


class Invalid(Exception):
    """An answer that does not validate; `problems` is what the re-ask tells the model."""

    def __init__(self, problems: str) -> None:
        super().__init__(problems)
        self.problems = problems


def register_response_model(model: M, name: str | None = None) -> M:
    """Make `response_model=name` (default: the class name) usable in payloads; a class decorator."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"register_response_model needs a pydantic BaseModel subclass, not {model!r}")
    _models.add(model, name)
    return model


def resolve_response_model(ref: str) -> type[BaseModel]:
    return _models.get(ref)


def response_format(model: type[BaseModel]) -> dict[str, Any]:
    """The chat completions `response_format` asking for JSON that matches `model`."""
    return {"type": "json_schema",
            "json_schema": {"name": model.__name__[:64], "schema": model.model_json_schema(), "strict": False}}


def parse_answer(content: str, model: type[BaseModel] | None) -> dict[str, Any] | None:
    """The validated data of an answer (None without a model); Invalid when it does not validate."""
    if model is None:
        return None
    try:
        return model.model_validate_json(_strip_fence(content)).model_dump(mode="json")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'the answer'}: {e['msg']}"
                             for e in exc.errors()[:ERRORS_SHOWN])
        raise Invalid(problems) from None


def _strip_fence(text: str) -> str:
    """Models asked for JSON sometimes wrap it in a ```json fence."""
    t = text.strip()
    if t.startswith("```") and t.endswith("```"):
        t = t[3:-3]
        t = t[4:] if t.startswith("json") else t
    return t.strip()


def reask_message(problems: str, model: type[BaseModel]) -> str:
    schema = json.dumps(model.model_json_schema(), separators=(",", ":"))
    return (f"Your answer did not match the required JSON schema ({problems}). Answer again with only a JSON object"
            f" that matches this schema: {schema}")
