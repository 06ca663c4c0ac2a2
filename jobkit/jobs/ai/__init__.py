"""AI generation jobs over any OpenAI-compatible provider: shared rate limits, cost reserved before it is spent,
structured output, resumable batches (`ai_batch`) and single answers (`ai_generate`). Needs `jobkit[ai]` in workers."""

from .errors import AISetupError, BatchRefused, ItemsFailed, ProviderRefused
from .models import (
    AIBatch,
    AIGenerate,
    BatchReport,
    GenerateResult,
    ItemError,
    ModelUsage,
    Retry,
    Section,
    Source,
)
from .outputs import register_response_model
from .prices import Price, set_price
from .providers import Provider, configure_provider
from .sinks import Sink, SinkFactory, register_python_sink, register_sink
from .task import ai_batch, ai_generate

__all__ = [
    "AIBatch",
    "AIGenerate",
    "AISetupError",
    "BatchRefused",
    "BatchReport",
    "GenerateResult",
    "ItemError",
    "ItemsFailed",
    "ModelUsage",
    "Price",
    "Provider",
    "ProviderRefused",
    "Retry",
    "Section",
    "Sink",
    "SinkFactory",
    "Source",
    "ai_batch",
    "ai_generate",
    "configure_provider",
    "register_python_sink",
    "register_response_model",
    "register_sink",
    "set_price",
]
