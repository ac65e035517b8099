"""Any provider through OpenAI's chat API: ``"model": "claude/<model>"`` or ``"gemini/<model>"``.

The request is an OpenAI chat body. Its parameters become keymux's call parameters for the
target's adapter (``Adapter.prepare`` writes the native body: system messages, merged turns,
``max_tokens``, stop sequences, ``generationConfig``). Parameters OpenAI has and the target
cannot honour are refused with a 400 that names them (``tools``, ``logprobs``, ``n`` > 1, ...)
rather than dropped silently; parameters that only describe the OpenAI call (``stream_options``,
``user``, ``store``, ...) are dropped or mapped; anything else passes to the native body as it
is, for the provider to judge (``top_k``, ``thinking``, ``safetySettings``, ...).

The answer comes back as OpenAI's: a ``chat.completion`` with ``usage``, or a stream of
``chat.completion.chunk`` events (role first, then content deltas, then the finish reason,
then with ``stream_options.include_usage`` a usage chunk with ``choices: []``, as OpenAI
does) ending in ``data: [DONE]``. ``groq/<model>`` needs none of this: Groq speaks OpenAI's
API, so the body is forwarded with its model renamed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from .._errors import InvalidRequestError
from .._types import Parsed, Usage

__all__ = [
    "ChunkWriter",
    "TranslationError",
    "completion",
    "split_model",
    "translate_params",
]

#: ``"<prefix>/<model>"`` -> the provider it is sent to
PREFIXES = {"claude": "claude", "anthropic": "claude", "gemini": "gemini", "groq": "groq"}

#: OpenAI parameters that describe the OpenAI call only: dropped
_DROP = frozenset(
    {"stream", "stream_options", "store", "service_tier", "parallel_tool_calls", "metadata"}
)
#: OpenAI features the translation cannot give: refused unless empty / off
_REFUSE = frozenset(
    {
        "tools",
        "functions",
        "function_call",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "audio",
        "prediction",
        "web_search_options",
    }
)
#: which OpenAI parameters each target can take (else refused unless at their default)
_CLAUDE_OK = frozenset({"messages", "model", "max_tokens", "max_completion_tokens"})
_CLAUDE_OK |= {"temperature", "top_p", "stop"}
_GEMINI_OK = _CLAUDE_OK | {"seed", "presence_penalty", "frequency_penalty"}
_GEMINI_OK |= {"response_format"}
_TARGET_OK = {"claude": _CLAUDE_OK, "gemini": _GEMINI_OK}
#: OpenAI parameters the targets lack, and the value that means "not used"
_DEFAULTS: Mapping[str, Any] = {
    "seed": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "response_format": {"type": "text"},
    "reasoning_effort": None,
    "modalities": ["text"],
}
#: ``tool_choice`` values that ask for nothing when no tools are sent
_NO_TOOL_CHOICE = (None, "none", "auto")

_CLAUDE_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_GEMINI_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
    "OTHER": "stop",
    "MALFORMED_FUNCTION_CALL": "stop",
}
_FINISH = {"claude": _CLAUDE_FINISH, "gemini": _GEMINI_FINISH}


class TranslationError(InvalidRequestError):
    """An OpenAI request that cannot be sent to the target provider as asked."""


def split_model(model: Any) -> tuple[str, str] | None:
    """``"claude/claude-sonnet-4-5"`` -> ``("claude", "claude-sonnet-4-5")``; None for a model
    OpenAI itself serves (no known prefix). Only the first ``/`` counts, so Groq's own
    ``openai/gpt-oss-120b`` is ``groq/openai/gpt-oss-120b``."""
    if not isinstance(model, str) or "/" not in model:
        return None
    prefix, _, rest = model.partition("/")
    provider = PREFIXES.get(prefix.lower())
    if provider is None:
        return None
    if not rest.strip():
        raise TranslationError(f"model {model!r} names no model after {prefix + '/'!r}")
    return provider, rest


def translate_params(provider: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """An OpenAI chat body as keymux call parameters for ``provider`` (its adapter writes the
    native body), and whether the caller asked for usage in the stream."""
    ok = _TARGET_OK[provider]
    params: dict[str, Any] = {}
    refused: list[str] = []
    for name, value in body.items():
        if name in _DROP:
            continue
        if name in _REFUSE:
            if value not in (None, False, [], {}):
                refused.append(name)
            continue
        if name == "tool_choice":
            if value not in _NO_TOOL_CHOICE:
                refused.append(name)
            continue
        if name == "user":
            if provider == "claude" and isinstance(value, str) and value:
                params["metadata"] = {"user_id": value}
            continue
        if name == "n":
            if value not in (None, 1):
                refused.append("n (only one choice is translated)")
            continue
        if name in ok:
            params[name] = value
            continue
        if name in _DEFAULTS:
            if value != _DEFAULTS[name] and value is not None:
                refused.append(name)
            continue
        params[name] = value  # not OpenAI's: the provider's own parameter, passed on
    if refused:
        raise TranslationError(
            f"{provider}: these OpenAI parameters cannot be translated: {', '.join(refused)} "
            f"(send them to {provider}'s own API at its native path instead)",
            provider=provider,
        )
    options = body.get("stream_options")
    include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
    return params, include_usage


def finish_reason(provider: str, native: str | None) -> str:
    if native is None:
        return "stop"
    return _FINISH[provider].get(native, "stop")


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _id(native: Any) -> str:
    if isinstance(native, str) and native:
        return "chatcmpl-" + native
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def native_id(provider: str, body: Any) -> Any:
    if not isinstance(body, dict):
        return None
    return body.get("id") if provider == "claude" else body.get("responseId")


def completion(provider: str, model: str, parsed: Parsed, raw: Any) -> bytes:
    """A whole native answer as OpenAI's ``chat.completion``."""
    answer = {
        "id": _id(native_id(provider, raw)),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": f"{provider}/{parsed.model or model}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": parsed.text or "", "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(provider, parsed.finish_reason),
            }
        ],
        "usage": _usage(parsed.usage),
    }
    return json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()


class ChunkWriter:
    """The OpenAI ``chat.completion.chunk`` events of one translated stream."""

    __slots__ = ("_created", "_id", "_include_usage", "_model", "provider")

    def __init__(self, provider: str, model: str, include_usage: bool) -> None:
        self.provider = provider
        self._model = f"{provider}/{model}"
        self._id = _id(None)
        self._created = int(time.time())
        self._include_usage = include_usage

    def _event(self, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            chunk["usage"] = usage
        data = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
        return b"data: " + data.encode() + b"\n\n"

    def role(self) -> bytes:
        return self._event(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )

    def delta(self, text: str) -> bytes:
        return self._event(
            [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]
        )

    def end(self, parsed: Parsed) -> bytes:
        """The finish chunk, the usage chunk (when asked for) and ``[DONE]``."""
        reason = finish_reason(self.provider, parsed.finish_reason)
        out = self._event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}])
        if self._include_usage:
            out += self._event([], _usage(parsed.usage))
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error(message: str, etype: str = "server_error") -> bytes:
        """An error inside the stream, the way OpenAI sends one (the SDK raises APIError)."""
        body = {"error": {"message": message, "type": etype, "param": None, "code": None}}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
