"""Anthropic's Messages API (``POST {base}/v1/messages``), spoken natively.

keymux callers pass OpenAI-style ``messages``; this adapter turns them into an Anthropic body:
``system`` messages (anywhere) become the top-level ``system``, consecutive messages of one role
are merged (Anthropic wants user/assistant turns to alternate), OpenAI ``text`` and
``image_url`` parts become Anthropic content blocks, ``max_tokens`` (required by Anthropic) gets
a default, and ``stop`` becomes ``stop_sequences``. Anthropic-native content blocks and every
other parameter pass through unchanged, so the provider's own validation speaks for itself.

Errors are classified by status, ``error.type`` and ``error.details.error_code``: a 429 is a
rate limit unless it is the spend cap (``enforced_spend_limit_reached``, or "regain access on"
a date); 402, ``billing_error`` and two billing 400s mean the key's money is spent; 529 and
``overloaded_error`` are Anthropic's overload. Rate-limit facts come from the
``anthropic-ratelimit-*`` headers, whose resets are absolute RFC 3339 timestamps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .._errors import UnsupportedError
from .._headers import parse_float, parse_retry_after, parse_rfc3339
from .._secret import scrub_secrets
from .._types import (
    USER_AGENT,
    HttpRequest,
    Kind,
    LimitInfo,
    Outcome,
    Parsed,
    Prepared,
    RateSnapshot,
    Usage,
)
from ._base import AdapterBase, SSEEvent, StreamFailure
from ._common import (
    InlineImage,
    Turns,
    bad,
    convert_messages,
    dumps,
    event_object,
    image_source,
    lowered,
    positive_int,
    prompt_tokens,
    read_json,
    snippet,
    stop_sequences,
)

__all__ = ["ClaudeAdapter", "ClaudeStreamDecoder"]

PROVIDER = "claude"
API_VERSION = "2023-06-01"

#: the version suffix of a model id: a date or "-latest"
_MODEL_VERSION = re.compile(r"-(?:\d{8}|latest)$")

#: status -> error.type of the error answers keymux writes in Anthropic's shape
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
DEFAULT_MAX_TOKENS = 1024

#: caller parameters this adapter rewrites; everything else passes through
_HANDLED = frozenset(
    {"messages", "model", "stream", "max_tokens", "max_completion_tokens", "stop", "betas"}
)
#: mid-stream error types worth another attempt (what would be a 529 or 500 outside a stream)
_RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error"})
#: "You will regain access on 2026-09-01 at 00:00 UTC." (spend-cap 429)
_REGAIN_RE = re.compile(r"regain access on (\d{4}-\d{2}-\d{2})(?: at (\d{1,2}:\d{2}))? UTC")
#: 400 messages that mean "this key's money is spent", not "your request is wrong"
_BILLING_400 = ("specified api usage limits", "credit balance is too low")


def _system_text(content: Any, where: str) -> str:
    """A system message's content as one string (a str or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
                    continue
            raise bad(PROVIDER, f"{where}: a system message may hold only text parts")
        return "\n\n".join(texts)
    raise bad(PROVIDER, f"{where}: content must be a string or a list of text parts")


def _image_block(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An OpenAI ``image_url`` part as an Anthropic ``image`` block (data URL or http URL)."""
    url = image_source(
        part, where, PROVIDER, schemes=("http://", "https://"), named="an http(s) URL"
    )
    if isinstance(url, InlineImage):
        source = {"type": "base64", "media_type": url.media_type, "data": url.data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any, where: str) -> str | list[Any]:
    """A user/assistant content as Anthropic expects it: a str, or a list of content blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(PROVIDER, f"{where}: content must be a string or a list of content parts")
    blocks: list[Any] = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
            continue
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise bad(
                PROVIDER, f"{where}.content[{i}]: a content part must be an object with a 'type'"
            )
        if part["type"] == "image_url":
            blocks.append(_image_block(part, f"{where}.content[{i}]"))
        else:  # OpenAI text parts have Anthropic's shape; native blocks pass through
            blocks.append(part)
    return blocks


def _merge(earlier: str | list[Any], later: str | list[Any]) -> list[Any]:
    """Two contents of one role as one: a string becomes a text block."""
    return _as_list(earlier) + _as_list(later)


def _as_list(content: str | list[Any]) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


#: how Anthropic's Messages API takes a conversation
_TURNS = Turns(
    provider=PROVIDER,
    roles={"user": "user", "assistant": "assistant"},
    field="content",
    content=_blocks,
    system_text=_system_text,
    merge=_merge,
    tool_results="Anthropic tool_result blocks",
    tool_calls="Anthropic tool_use blocks",
)


def _max_tokens(params: Mapping[str, Any]) -> int | None:
    value = params.get("max_tokens")
    if value is None:
        value = params.get("max_completion_tokens")
    if value is None:
        return None
    checked = positive_int(value)
    if checked is None:
        raise bad(PROVIDER, f"max_tokens must be a positive integer, got {value!r}")
    return checked


def _merge_system(given: Any, texts: list[str]) -> Any:
    """A caller's own top-level ``system`` combined with the system messages."""
    joined = "\n\n".join(texts)
    if given is None:
        return joined
    if isinstance(given, str):
        return f"{given}\n\n{joined}" if given else joined
    if isinstance(given, list):
        return [*given, {"type": "text", "text": joined}]
    raise bad(PROVIDER, "system must be a string or a list of text blocks")


def _limit(headers: Mapping[str, str], prefix: str, now_wall: float) -> LimitInfo | None:
    limit = parse_float(headers.get(prefix + "limit"))
    remaining = parse_float(headers.get(prefix + "remaining"))
    reset_at = parse_rfc3339(headers.get(prefix + "reset"))
    if limit is None and remaining is None and reset_at is None:
        return None
    reset_after = None if reset_at is None else max(0.0, reset_at - now_wall)
    return LimitInfo(limit=limit, remaining=remaining, reset_after=reset_after)


def _regain_after(message: str, now_wall: float) -> float | None:
    """Seconds until "You will regain access on YYYY-MM-DD at HH:MM UTC", if the message says."""
    match = _REGAIN_RE.search(message)
    if not match:
        return None
    try:
        day = datetime.strptime(match.group(1), "%Y-%m-%d").replace(tzinfo=UTC)
        if match.group(2):
            hours, minutes = (int(x) for x in match.group(2).split(":"))
            day = day.replace(hour=hours, minute=minutes)
    except ValueError:
        return None
    return max(0.0, day.timestamp() - now_wall)


def classify_claude(
    status: int, headers: Mapping[str, str], body: bytes, now_wall: float
) -> Outcome:
    """The pure classification of one non-2xx Anthropic answer: by status, ``error.type`` and
    ``error.details.error_code``, and for the spend cap the date in its message."""
    headers = lowered(headers)
    error_type: str | None = None
    code: str | None = None
    message = ""
    data = read_json(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        if isinstance(error.get("type"), str):
            error_type = error["type"]
        if isinstance(error.get("message"), str):
            message = error["message"]
        details = error.get("details")
        if isinstance(details, dict) and isinstance(details.get("error_code"), str):
            code = details["error_code"]
    elif body:
        message = snippet(body)
    message = scrub_secrets(message) or f"HTTP {status} from Anthropic"
    retry_after = parse_retry_after(headers, now_wall)
    lower = message.lower()
    limit: float | None = None
    dimension: str | None = None
    period: float | None = None

    if status == 429:
        spend_cap = code == "enforced_spend_limit_reached" or (
            retry_after is None and "regain access on" in lower
        )
        if spend_cap:
            kind = Kind.QUOTA_SPENT
            retry_after = _regain_after(message, now_wall)
        else:
            kind = Kind.RATE_LIMITED
            retry_after = _finer_wait(headers, retry_after, now_wall)
            limit, dimension, period = _named_limit(message)
    elif (
        status == 402
        or error_type == "billing_error"
        or (status == 400 and any(phrase in lower for phrase in _BILLING_400))
    ):
        kind = Kind.QUOTA_SPENT
    elif status in (401, 403):
        kind = Kind.KEY_INVALID
    elif status == 529 or error_type == "overloaded_error":
        kind = Kind.OVERLOADED
    elif status >= 500 or status in (408, 409):
        kind = Kind.SERVER_ERROR
    elif status == 413:
        kind = Kind.TOO_LARGE
    else:
        kind = Kind.BAD_REQUEST
    return Outcome(
        kind=kind,
        status=status,
        message=message,
        retry_after=retry_after,
        error_type=error_type,
        code=code,
        limit=limit,
        dimension=dimension,
        period=period,
    )


#: "... the rate limit for your organization (...) of 50 requests per minute" / "of 40,000
#: input tokens per minute"
_NAMED_LIMIT_RE = re.compile(
    r"rate limit for your organization[^.]*? of ([\d,]+) ((?:input |output )?tokens|requests)"
    r" per (minute|day)",
    re.IGNORECASE,
)


def _named_limit(message: str) -> tuple[float | None, str | None, float | None]:
    """(limit, "requests" | "tokens", period in seconds) a rate-limit message names."""
    match = _NAMED_LIMIT_RE.search(message)
    if match is None:
        return None, None, None
    dimension = "requests" if match.group(2).lower() == "requests" else "tokens"
    period = 60.0 if match.group(3).lower() == "minute" else 86400.0
    return float(match.group(1).replace(",", "")), dimension, period


def _finer_wait(
    headers: Mapping[str, str], retry_after: float | None, now_wall: float
) -> float | None:
    """A whole-second ``retry-after`` gives way to the millisecond reset of a spent dimension
    when that is sooner (the reset is when the limit is whole again: never before the wait)."""
    resets = []
    for dim in ("requests", "tokens", "input-tokens", "output-tokens"):
        remaining = parse_float(headers.get(f"anthropic-ratelimit-{dim}-remaining"))
        if remaining is not None and remaining <= 0:
            reset_at = parse_rfc3339(headers.get(f"anthropic-ratelimit-{dim}-reset"))
            if reset_at is not None:
                resets.append(max(0.0, reset_at - now_wall))
    if not resets:
        return retry_after
    reset = max(resets)
    return reset if retry_after is None or reset < retry_after else retry_after


_STREAM_EVENTS = frozenset(
    {"message_start", "content_block_delta", "message_delta", "message_stop", "error"}
)


class ClaudeStreamDecoder:
    """Reads one Anthropic stream: named events, cumulative usage, ``message_stop`` at the end."""

    __slots__ = ("_input", "_output", "_stop_reason", "_text", "done", "model")

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self._text: list[str] = []
        self._input = 0
        self._output = 0
        self._stop_reason: str | None = None

    def feed(self, event: SSEEvent) -> str | None:
        name = event.event
        if name is not None and name not in _STREAM_EVENTS:
            return None  # ping and event types added later
        data = event_object(event.data, PROVIDER)
        kind = data.get("type", name)
        if kind == "content_block_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    self._text.append(text)
                    return text
            return None
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("model"), str):
                    self.model = message["model"]
                self._usage(message.get("usage"))
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self._stop_reason = delta["stop_reason"]
            self._usage(data.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = data.get("error")
            error = error if isinstance(error, dict) else {}
            etype = error.get("type") if isinstance(error.get("type"), str) else None
            message = error.get("message")
            text = scrub_secrets(message) if isinstance(message, str) else ""
            text = text or "stream error"
            raise StreamFailure(text, error_type=etype, retryable=etype in _RETRYABLE_STREAM_ERRORS)
        return None

    def _usage(self, usage: Any) -> None:
        """Anthropic's usage is cumulative: the latest value of each field wins."""
        if not isinstance(usage, dict):
            return
        if "input_tokens" in usage:
            self._input = _input_tokens(usage)
        output = usage.get("output_tokens")
        if isinstance(output, int):
            self._output = output

    def result(self) -> Parsed:
        return Parsed(
            text="".join(self._text),
            model=self.model,
            usage=Usage(input_tokens=self._input, output_tokens=self._output),
            finish_reason=self._stop_reason,
        )


def _input_tokens(usage: Mapping[str, Any]) -> int:
    """Total input: uncached + cache writes + cache reads (each may be absent or null)."""
    total = 0
    for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = usage.get(name)
        if isinstance(value, int):
            total += value
    return total


class ClaudeAdapter(AdapterBase):
    """Anthropic Messages API. Stateless: one instance serves every key and request."""

    name = PROVIDER
    default_base_url = "https://api.anthropic.com"
    default_models: Mapping[str, str] = {"chat": "claude-sonnet-4-5"}
    endpoints = frozenset({"chat"})
    #: where the key goes (the Anthropic SDK 2.x sends its key as a Bearer token instead, and a
    #: forwarded request keeps the SDK's choice)
    auth_header = "x-api-key"
    auth_prefix = ""

    def limit_scope(self, model: str | None) -> str:
        """Anthropic limits each model *class*: a dated or ``-latest`` id shares its class's
        limits (``claude-sonnet-4-5-20250929`` spends ``claude-sonnet-4-5``'s)."""
        return _MODEL_VERSION.sub("", model) if model else ""

    def error_body(self, status: int, message: str) -> bytes:
        """An error answer in Anthropic's own shape (for answers keymux makes itself)."""
        etype = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return dumps({"type": "error", "error": {"type": etype, "message": message}}, PROVIDER)

    def prepare(
        self, endpoint: str, params: Mapping[str, Any], *, model: str | None, stream: bool
    ) -> Prepared:
        if endpoint != "chat":
            raise self._unsupported(endpoint)
        system, turns = convert_messages(params.get("messages"), _TURNS)
        model = model or params.get("model") or self.default_models["chat"]
        if not isinstance(model, str):
            raise bad(PROVIDER, f"model must be a string, got {type(model).__name__}")
        max_tokens = _max_tokens(params)
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            "messages": turns,
        }
        for key, value in params.items():
            if key not in _HANDLED:
                body[key] = value
        if system:
            body["system"] = _merge_system(body.get("system"), system)
        stop = params.get("stop")
        if stop is not None:
            body["stop_sequences"] = stop_sequences(stop, PROVIDER)
        headers = {
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        if stream:
            body["stream"] = True
            headers["accept"] = "text/event-stream"
        betas = params.get("betas")
        if betas:
            headers["anthropic-beta"] = betas if isinstance(betas, str) else ",".join(betas)
        return Prepared("POST", "/v1/messages", headers, dumps(body, PROVIDER), model, "x-api-key")

    def parse(self, endpoint: str, body: Any, *, model: str | None = None) -> Parsed:
        if endpoint != "chat":
            raise self._unsupported(endpoint)
        if not isinstance(body, dict):
            raise ValueError(f"claude: the answer is not a JSON object ({type(body).__name__})")
        content = body.get("content")
        if not isinstance(content, list):
            raise ValueError("claude: the answer has no 'content' list")
        usage = body.get("usage")
        if not isinstance(usage, dict) or not isinstance(usage.get("output_tokens"), int):
            raise ValueError("claude: the answer has no usage.output_tokens")
        if not isinstance(usage.get("input_tokens"), int):
            raise ValueError("claude: the answer has no usage.input_tokens")
        texts = [
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        ]
        model = body.get("model")
        stop_reason = body.get("stop_reason")
        return Parsed(
            text="".join(texts),
            model=model if isinstance(model, str) else None,
            usage=Usage(input_tokens=_input_tokens(usage), output_tokens=usage["output_tokens"]),
            finish_reason=stop_reason if isinstance(stop_reason, str) else None,
        )

    def stream_decoder(self) -> ClaudeStreamDecoder:
        return ClaudeStreamDecoder()

    def usage_of(self, body: Any) -> Usage:
        """The usage a JSON answer of any endpoint reports (zeros when it reports none)."""
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return Usage()
        output = usage.get("output_tokens")
        return Usage(_input_tokens(usage), output if isinstance(output, int) else 0)

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, now_wall: float
    ) -> Outcome:
        # wall time is needed only for HTTP-date retry-after and the spend cap's
        # "regain access" date
        return classify_claude(status, headers, body, now_wall)

    def rate_snapshot(self, headers: Mapping[str, str], now_wall: float) -> RateSnapshot | None:
        headers = lowered(headers)
        requests = _limit(headers, "anthropic-ratelimit-requests-", now_wall)
        tokens = _limit(headers, "anthropic-ratelimit-tokens-", now_wall)
        if tokens is None:
            tokens = _limit(headers, "anthropic-ratelimit-input-tokens-", now_wall)
        if requests is None and tokens is None:
            return None
        return RateSnapshot(requests=requests, tokens=tokens)

    def estimate_tokens(self, endpoint: str, params: Mapping[str, Any]) -> int:
        output = positive_int(params.get("max_tokens")) or positive_int(
            params.get("max_completion_tokens")
        )
        return prompt_tokens(params.get("messages")) + (output or DEFAULT_MAX_TOKENS)

    def probe(self, *, base_url: str, api_key: str) -> HttpRequest:
        url = f"{base_url.rstrip('/')}/v1/models?limit=1"
        return HttpRequest("GET", url, self._headers(api_key))

    @staticmethod
    def _headers(api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "anthropic-version": API_VERSION, "user-agent": USER_AGENT}

    @staticmethod
    def _unsupported(endpoint: str) -> UnsupportedError:
        if endpoint == "embed":
            return UnsupportedError(
                "claude: Anthropic has no embeddings API; use an embeddings provider such as "
                "Voyage AI (Anthropic's recommendation), or keymux's openai or gemini client",
                provider=PROVIDER,
            )
        return UnsupportedError(
            f"claude: unknown endpoint {endpoint!r}; Anthropic supports 'chat'", provider=PROVIDER
        )
