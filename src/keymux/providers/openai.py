"""OpenAI's chat-completions and embeddings wire protocol: ``POST {base}/chat/completions`` and
``/embeddings`` (base ``https://api.openai.com/v1``), the key as a Bearer token, rate limits in the
``x-ratelimit-*`` headers with resets as Go durations (``6m0s``), errors as ``{"error": {...}}``.

The adapter is stateless and pure. Everything a provider with an OpenAI-compatible API changes
(base URL, path prefix, default models, the window of its request headers, a few statuses) is a
class attribute, so Groq (``groq.py``) is a small subclass.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from array import array
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, cast

from .._errors import UnsupportedError
from .._headers import parse_float, parse_go_duration, parse_retry_after
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
from ._common import bad, dumps, positive_int, prompt_tokens, snippet

__all__ = ["OpenAIAdapter", "OpenAIStreamDecoder"]

_loads = json.loads

#: body keys the adapter owns; caller values for them are ignored or handled explicitly
_CHAT_OWN = frozenset({"model", "messages", "stream", "stream_options"})
_EMBED_OWN = frozenset({"model", "input", "stream", "stream_options"})

#: 429 ``error.code`` values (and ``error.type``) that mean billing, not a short-term limit
_BILLING_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "billing_hard_limit_reached",
        "billing_not_active",
    }
)
#: codes that mean the key (or its organisation) is barred, whatever the status
_KEY_CODES = frozenset({"invalid_api_key", "account_deactivated", "organization_restricted"})
#: error types / codes that mark a provider-side overload rather than a plain server error
_OVERLOAD_MARKS = frozenset(
    {"server_is_overloaded", "service_unavailable_error", "overloaded_error", "overloaded"}
)
#: stream error types / codes worth another attempt (if nothing reached the caller yet)
_RETRYABLE_STREAM = frozenset(
    {
        "server_error",
        "internal_error",
        "service_unavailable_error",
        "server_is_overloaded",
        "overloaded_error",
        "rate_limit_exceeded",
        "slow_down",
    }
)
_RETRYABLE_KINDS = frozenset({Kind.RATE_LIMITED, Kind.OVERLOADED, Kind.SERVER_ERROR})

#: "Please try again in 644ms" / "4.77s" / "9m38.016s"
_TRY_AGAIN = re.compile(r"try again in\s+((?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns))+)", re.IGNORECASE)
_PER_DAY = re.compile(r"per day|\((?:rpd|tpd)\)", re.IGNORECASE)
#: the limit a rate-limit message names: "... on requests per min (RPM): Limit 20, Used 20,
#: Requested 1." (OpenAI), "on tokens per minute (TPM): Limit 6000, ..." (Groq), and the older
#: "on requests per min. Limit: 3 / min."
_NAMED_LIMIT = re.compile(
    r"\bon (requests|tokens) per (min(?:ute)?|day)\b.{0,40}?\bLimit:?\s*(\d[\d,]*(?:\.\d+)?)",
    re.IGNORECASE | re.DOTALL,
)
_PERIODS = {"min": 60.0, "minute": 60.0, "day": 86400.0}

_JSON_HEADERS = MappingProxyType(
    {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
)
_STREAM_HEADERS = MappingProxyType(
    {"Content-Type": "application/json", "Accept": "text/event-stream", "User-Agent": USER_AGENT}
)

#: status -> (error.type, error.code) of the error answers keymux writes in OpenAI's shape
_ERROR_SHAPES: Mapping[int, tuple[str, str | None]] = MappingProxyType(
    {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("invalid_request_error", "unsupported_country_region_territory"),
        404: ("invalid_request_error", "not_found"),
        413: ("invalid_request_error", "request_too_large"),
        429: ("requests", "rate_limit_exceeded"),
        503: ("service_unavailable_error", None),
        504: ("timeout", None),
    }
)

_LITTLE_ENDIAN = sys.byteorder == "little"
_NON_TEXT_PART_CHARS = 1000  # an image or audio part counts as ~250 tokens in estimates
_DEFAULT_MAX_OUTPUT = 256


# --- small readers ------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _count(raw: Mapping[str, Any], name: str, where: str) -> int:
    value = raw.get(name)
    if value is None:
        return 0
    if type(value) is int and value >= 0:
        return value
    if type(value) is float and value >= 0 and value.is_integer():
        return int(value)
    raise ValueError(f"{where}: usage.{name} must be a non-negative integer, got {value!r}")


def _usage(raw: object, where: str) -> Usage:
    """OpenAI's ``usage`` object (``prompt_tokens`` / ``completion_tokens``); absent: zeros."""
    if raw is None:
        return Usage()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: 'usage' must be an object, got {_type_name(raw)}")
    return Usage(_count(raw, "prompt_tokens", where), _count(raw, "completion_tokens", where))


def _opt_str(raw: Mapping[str, Any], name: str, where: str) -> str | None:
    value = raw.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{where}: '{name}' must be a string, got {_type_name(value)}")


def _vector(raw: object, position: int) -> list[float]:
    """One embedding: a list of numbers, or base64 of little-endian float32s."""
    if isinstance(raw, str):
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"embedding data[{position}] is not valid base64") from None
        if not data or len(data) % 4:
            raise ValueError(
                f"embedding data[{position}] decodes to {len(data)} bytes, "
                "not a whole number of float32 values"
            )
        floats = array("f")
        floats.frombytes(data)
        if not _LITTLE_ENDIAN:
            floats.byteswap()
        return floats.tolist()
    if isinstance(raw, list) and raw:
        try:
            return array("d", raw).tolist()
        except TypeError:
            raise ValueError(
                f"embedding data[{position}] holds a value that is not a number"
            ) from None
    raise ValueError(
        f"embedding data[{position}] must be a non-empty list of numbers or a base64 string, "
        f"got {_type_name(raw)}"
    )


# --- the stream decoder -------------------------------------------------------------------


def _stream_failure(error: object) -> StreamFailure:
    """The StreamFailure for a chunk's ``error`` value (an object, or a bare string)."""
    if isinstance(error, dict):
        message = error.get("message")
        etype = error.get("type")
        code = error.get("code")
        etype = etype if isinstance(etype, str) else None
        code = str(code) if code is not None else None
    else:
        message, etype, code = error, None, None
    if not isinstance(message, str) or not message:
        message = "the provider reported an error in the stream"
    return StreamFailure(
        scrub_secrets(message),
        error_type=etype,
        retryable=etype in _RETRYABLE_STREAM or code in _RETRYABLE_STREAM,
    )


class OpenAIStreamDecoder:
    """Reads one streamed chat completion (OpenAI's SSE chunks; Groq's ``x_groq`` too)."""

    __slots__ = ("_finish", "_model", "_parts", "_usage", "done")

    done: bool

    def __init__(self) -> None:
        self.done = False
        self._parts: list[str] = []
        self._model: str | None = None
        self._usage: Usage | None = None
        self._finish: str | None = None

    def feed(self, event: SSEEvent) -> str | None:
        data = event.data
        if self.done or not data or data.isspace():
            return None
        if data.startswith("[DONE]"):
            self.done = True
            return None
        try:
            chunk = _loads(data)
        except ValueError as exc:
            if event.event == "error":
                raise _stream_failure(data) from None
            raise ValueError(f"stream chunk is not valid JSON ({exc}): {data[:80]!r}") from None
        if event.event == "error":  # not OpenAI's own form, but some compatible servers use it
            raise _stream_failure(chunk.get("error", chunk) if isinstance(chunk, dict) else data)
        if not isinstance(chunk, dict):
            raise ValueError(f"stream chunk must be a JSON object, got {_type_name(chunk)}")
        error = chunk.get("error")
        if error:
            raise _stream_failure(error)
        if self._model is None:
            model = chunk.get("model")
            if isinstance(model, str):
                self._model = model
        usage = chunk.get("usage")
        if usage is not None:
            self._usage = _usage(usage, "stream chunk")
        extra = chunk.get("x_groq")
        if extra is not None:
            self._read_x_groq(extra)
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            if choices is None:
                return None
            raise ValueError(f"stream chunk: 'choices' must be a list, got {_type_name(choices)}")
        text: str | None = None
        for choice in choices:
            if not isinstance(choice, dict):
                raise ValueError("stream chunk: each choice must be an object")
            if choice.get("index", 0) != 0:  # n > 1: the caller's text is choice 0
                continue
            finish = choice.get("finish_reason")
            if isinstance(finish, str):
                self._finish = finish
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._parts.append(content)
                    text = content if text is None else text + content
        return text

    def _read_x_groq(self, extra: object) -> None:
        if not isinstance(extra, dict):
            return
        error = extra.get("error")
        if error:
            raise _stream_failure(error)
        usage = extra.get("usage")
        if usage is not None:
            self._usage = _usage(usage, "stream chunk x_groq")

    def result(self) -> Parsed:
        return Parsed(
            text="".join(self._parts),
            model=self._model,
            usage=self._usage if self._usage is not None else Usage(),
            finish_reason=self._finish,
        )


# --- the adapter --------------------------------------------------------------------------


class OpenAIAdapter(AdapterBase):
    """OpenAI: ``POST {base_url}/chat/completions``, ``/embeddings``, ``GET /models``."""

    __slots__ = ()

    name: str = "openai"
    default_base_url: str = "https://api.openai.com/v1"
    default_models: Mapping[str, str] = MappingProxyType(
        {"chat": "gpt-4o-mini", "embed": "text-embedding-3-small"}
    )
    endpoints: frozenset[str] = frozenset({"chat", "embed"})
    #: where the key goes: ``auth_header: auth_prefix + key``
    auth_header: str = "Authorization"
    auth_prefix: str = "Bearer "

    #: put between the base URL and the endpoint paths (Groq's SDK puts "/openai/v1" there)
    _api_prefix: str = ""
    #: the window of the x-ratelimit-*-requests headers ("day" for Groq)
    _requests_window: str = "minute"
    #: statuses that mean "provider overloaded, not this key's fault"
    _overload_statuses: frozenset[int] = frozenset({503})
    #: whether a 413 means "larger than this key's token limit" (Groq) or a plain bad request
    _oversize_413: bool = False

    # -- requests --

    def url(self, base_url: str, path: str) -> str:
        """``path`` (relative to the official base URL) joined to ``base_url``."""
        base = base_url.rstrip("/") if base_url.endswith("/") else base_url
        prefix = self._api_prefix
        if prefix and base.endswith(prefix) and path.startswith(prefix):
            return base + path[len(prefix) :]  # the OpenAI-SDK style base URL, prefix included
        return base + path

    def _model(self, endpoint: str, model: str | None, params: Mapping[str, Any]) -> str:
        if model is None:
            model = params.get("model")
        if model is None:
            default = self.default_models.get(endpoint)
            if default is None:
                raise UnsupportedError(
                    f"{self.name} has no default model for {endpoint!r}: pass model=",
                    provider=self.name,
                )
            return default
        if not isinstance(model, str) or not model.strip():
            raise bad(self.name, f"model must be a non-empty string, got {_type_name(model)}")
        return model

    def _check_messages(self, messages: object) -> None:
        if not isinstance(messages, list | tuple) or not messages:
            raise bad(
                self.name,
                "chat needs messages=[{'role': 'user', 'content': '...'}, ...], "
                f"a non-empty list; got {_type_name(messages)}"
                + (" (empty)" if isinstance(messages, list | tuple) else ""),
            )
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise bad(
                    self.name,
                    f"messages[{i}] must be a dict with 'role' and 'content', "
                    f"got {_type_name(message)}",
                )
            role = message.get("role")
            if not isinstance(role, str) or not role:
                raise bad(self.name, f"messages[{i}] needs a 'role' string such as 'user'")
            if "content" in message:
                content = message["content"]
                if content is not None and not isinstance(content, str | list):
                    raise bad(
                        self.name,
                        f"messages[{i}]['content'] must be a string or a list of parts, "
                        f"got {_type_name(content)}",
                    )
            elif "tool_calls" not in message and "function_call" not in message:
                raise bad(self.name, f"messages[{i}] (role {role!r}) needs 'content'")

    def _check_input(self, value: object) -> None:
        if isinstance(value, str):
            return
        if isinstance(value, list | tuple) and value and all(isinstance(x, str) for x in value):
            return
        raise bad(
            self.name,
            f"embed needs input= a string or a non-empty list of strings, got {_type_name(value)}",
        )

    def prepare(
        self, endpoint: str, params: Mapping[str, Any], *, model: str | None, stream: bool
    ) -> Prepared:
        if endpoint == "chat":
            messages = params.get("messages")
            self._check_messages(messages)
            body: dict[str, Any] = {"model": self._model(endpoint, model, params)}
            body["messages"] = messages
            for name, value in params.items():
                if name not in _CHAT_OWN:
                    body[name] = value
            if stream:
                body["stream"] = True
                options = params.get("stream_options")
                body["stream_options"] = {"include_usage": True} if options is None else options
            path = self._api_prefix + "/chat/completions"
        elif endpoint == "embed":
            if stream:
                raise UnsupportedError(
                    f"{self.name}: embeddings cannot be streamed", provider=self.name
                )
            value = params.get("input")
            self._check_input(value)
            body = {"model": self._model(endpoint, model, params), "input": value}
            body["encoding_format"] = "float"
            for name, item in params.items():
                if name not in _EMBED_OWN:
                    body[name] = item
            path = self._api_prefix + "/embeddings"
        else:
            raise UnsupportedError(
                f"{self.name} has no {endpoint!r} endpoint; use one of "
                f"{', '.join(sorted(self.endpoints))}",
                provider=self.name,
            )
        headers = _STREAM_HEADERS if stream else _JSON_HEADERS
        return Prepared(
            "POST", path, headers, dumps(body, self.name), body["model"], "Authorization", "Bearer "
        )

    def error_body(self, status: int, message: str) -> bytes:
        """An error answer in this provider's own shape (for answers keymux makes itself)."""
        etype, code = _ERROR_SHAPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        error = {"message": message, "type": etype, "param": None, "code": code}
        return dumps({"error": error}, self.name)

    def probe(self, *, base_url: str, api_key: str) -> HttpRequest:
        headers = {"Authorization": "Bearer " + api_key, **_JSON_HEADERS}
        return HttpRequest("GET", self.url(base_url, self._api_prefix + "/models"), headers)

    # -- answers --

    def parse(self, endpoint: str, body: Any, *, model: str | None = None) -> Parsed:
        if endpoint == "chat":
            return self._parse_chat(body)
        if endpoint == "embed":
            return self._parse_embed(body)
        raise UnsupportedError(f"{self.name} has no {endpoint!r} endpoint", provider=self.name)

    @staticmethod
    def _parse_chat(body: Any) -> Parsed:
        where = "chat response"
        if not isinstance(body, dict):
            raise ValueError(f"{where} must be a JSON object, got {_type_name(body)}")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where} has no 'choices' list (got {_type_name(choices)})")
        choice = choices[0]
        if not isinstance(choice, dict):
            raise ValueError(f"{where}: choices[0] must be an object, got {_type_name(choice)}")
        message = choice.get("message")
        if not isinstance(message, dict):
            raise ValueError(f"{where}: choices[0].message must be an object")
        return Parsed(
            text=_opt_str(message, "content", where),
            model=_opt_str(body, "model", where),
            usage=_usage(body.get("usage"), where),
            finish_reason=_opt_str(choice, "finish_reason", where),
        )

    @staticmethod
    def _parse_embed(body: Any) -> Parsed:
        where = "embeddings response"
        if not isinstance(body, dict):
            raise ValueError(f"{where} must be a JSON object, got {_type_name(body)}")
        data = body.get("data")
        if not isinstance(data, list) or not data:
            raise ValueError(f"{where} has no 'data' list (got {_type_name(data)})")
        slots: list[list[float] | None] = [None] * len(data)
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise ValueError(f"{where}: data[{position}] must be an object")
            index = item.get("index", position)
            if type(index) is not int or not 0 <= index < len(data) or slots[index] is not None:
                raise ValueError(f"{where}: data[{position}] has a bad or repeated index {index!r}")
            slots[index] = _vector(item.get("embedding"), position)
        return Parsed(
            text=None,
            model=_opt_str(body, "model", where),
            usage=_usage(body.get("usage"), where),
            embeddings=cast("list[list[float]]", slots),  # every slot was filled above
        )

    def stream_decoder(self) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()

    def usage_of(self, body: Any) -> Usage:
        """The usage a JSON answer of any endpoint reports (zeros when it reports none)."""
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return Usage()
        return Usage(
            _count(usage, "prompt_tokens", "usage") or _count(usage, "input_tokens", "usage"),
            _count(usage, "completion_tokens", "usage") or _count(usage, "output_tokens", "usage"),
        )

    # -- errors and limits --

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, now_wall: float
    ) -> Outcome:
        message, etype, code = _read_error(status, body)
        lower = message.lower()
        kind = self._kind(status, headers, etype, code, lower)
        should_retry = headers.get("x-should-retry")
        if should_retry == "false" and kind in _RETRYABLE_KINDS:
            kind = Kind.BAD_REQUEST
        elif should_retry == "true" and kind is Kind.BAD_REQUEST:
            kind = Kind.SERVER_ERROR
        retry_after: float | None = None
        if kind is Kind.RATE_LIMITED or kind is Kind.DAILY_LIMIT:
            retry_after = self._rate_wait(kind, headers, etype, lower, message, now_wall)
            limit, dimension, period = _named_limit(message)
            return Outcome(
                kind, status, message, retry_after, etype, code, limit, dimension, period
            )
        if kind in _RETRYABLE_KINDS:
            retry_after = _header_wait(headers, now_wall)
        return Outcome(kind, status, message, retry_after, etype, code)

    def _kind(
        self,
        status: int,
        headers: Mapping[str, str],
        etype: str | None,
        code: str | None,
        lower: str,
    ) -> Kind:
        if etype == "insufficient_quota" or code in _BILLING_CODES:
            return Kind.QUOTA_SPENT
        if status == 401 or status == 403 or code in _KEY_CODES:
            return Kind.KEY_INVALID
        if status == 402 or (status == 429 and "exceeded your current quota" in lower):
            return Kind.QUOTA_SPENT
        if status == 429 or status == 413:
            if "request too large" in lower or (status == 413 and self._oversize_413):
                return Kind.TOO_LARGE
            if status == 413:
                return Kind.BAD_REQUEST
            if _PER_DAY.search(lower) or self._daily_spent(headers):
                return Kind.DAILY_LIMIT
            return Kind.RATE_LIMITED
        if status in self._overload_statuses:
            return Kind.OVERLOADED
        if status >= 500:
            if etype in _OVERLOAD_MARKS or code in _OVERLOAD_MARKS or "overloaded" in lower:
                return Kind.OVERLOADED
            return Kind.SERVER_ERROR
        if status == 408 or status == 409:
            return Kind.SERVER_ERROR
        return Kind.BAD_REQUEST

    def _daily_spent(self, headers: Mapping[str, str]) -> bool:
        """Groq's request headers count the day: none left means the daily quota is spent."""
        if self._requests_window != "day":
            return False
        remaining = parse_float(headers.get("x-ratelimit-remaining-requests"))
        return remaining is not None and remaining <= 0

    def _rate_wait(
        self,
        kind: Kind,
        headers: Mapping[str, str],
        etype: str | None,
        lower: str,
        message: str,
        now_wall: float,
    ) -> float | None:
        """Seconds to wait: ``retry-after-ms``; else the message's "try again in" (else the
        reset header of the exhausted dimension), unless a whole-second ``retry-after`` says
        something other than its rounding up ("try again in 734ms" beside ``retry-after: 1``
        waits 734 ms); else ``retry-after``. A daily limit waits for the longest of those that
        speak of the day."""
        header = _header_wait(headers, now_wall)
        said = _message_wait(message)
        daily_requests = self._requests_window == "day"
        if kind is Kind.DAILY_LIMIT:
            waits = [w for w in (header, said) if w is not None]
            if daily_requests and (self._daily_spent(headers) or "requests per day" in lower):
                reset = _reset(headers, "requests")
                if reset is not None:
                    waits.append(reset)
            return max(waits) if waits else None
        if header is not None and "retry-after-ms" in headers:
            return header  # already to the millisecond
        candidates: list[float] = []
        for dim in ("requests", "tokens"):
            if dim == "requests" and daily_requests:
                continue  # Groq's request headers count the day, not this short-term limit
            remaining = parse_float(headers.get("x-ratelimit-remaining-" + dim))
            if remaining is not None and remaining <= 0:
                reset = _reset(headers, dim)
                if reset is not None:
                    candidates.append(reset)
        finer = said if said is not None else (max(candidates) if candidates else None)
        if header is not None:
            # a whole-second header rounds the finer figure up: take the finer one
            return finer if finer is not None and finer <= header < finer + 1.0 else header
        if finer is not None:
            return finer
        if etype == "tokens" or "tokens per" in lower:
            return _reset(headers, "tokens")
        if (etype == "requests" or "requests per" in lower) and not daily_requests:
            return _reset(headers, "requests")
        return None

    def rate_snapshot(self, headers: Mapping[str, str], now_wall: float) -> RateSnapshot | None:
        get = headers.get
        requests = _limit_info(
            get("x-ratelimit-limit-requests"),
            get("x-ratelimit-remaining-requests"),
            get("x-ratelimit-reset-requests"),
        )
        tokens = _limit_info(
            get("x-ratelimit-limit-tokens"),
            get("x-ratelimit-remaining-tokens"),
            get("x-ratelimit-reset-tokens"),
        )
        if requests is None and tokens is None:
            return None
        return RateSnapshot(requests=requests, tokens=tokens, requests_window=self._requests_window)

    def estimate_tokens(self, endpoint: str, params: Mapping[str, Any]) -> int:
        if endpoint == "embed":
            value = params.get("input")
            if isinstance(value, str):
                chars = len(value)
            elif isinstance(value, list | tuple):
                chars = sum(len(x) for x in value if isinstance(x, str))
            else:
                chars = 0
            return max(1, (chars + 3) // 4)
        prompt = prompt_tokens(params.get("messages"), part_chars=_NON_TEXT_PART_CHARS)
        output = (
            positive_int(params.get("max_completion_tokens"))
            or positive_int(params.get("max_tokens"))
            or _DEFAULT_MAX_OUTPUT
        )
        choices = positive_int(params.get("n")) or 1
        return prompt + output * choices


def _limit_info(limit: str | None, remaining: str | None, reset: str | None) -> LimitInfo | None:
    if limit is None and remaining is None and reset is None:
        return None
    return LimitInfo(parse_float(limit), parse_float(remaining), parse_go_duration(reset))


def _reset(headers: Mapping[str, str], dim: str) -> float | None:
    return parse_go_duration(headers.get("x-ratelimit-reset-" + dim))


def _message_wait(message: str) -> float | None:
    match = _TRY_AGAIN.search(message)
    return None if match is None else parse_go_duration(match.group(1))


def _named_limit(message: str) -> tuple[float | None, str | None, float | None]:
    """(limit, "requests" | "tokens", period in seconds) a rate-limit message names."""
    match = _NAMED_LIMIT.search(message)
    if match is None:
        return None, None, None
    limit = parse_float(match.group(3).replace(",", ""))
    return limit, match.group(1).lower(), _PERIODS[match.group(2).lower()]


def _header_wait(headers: Mapping[str, str], now_wall: float) -> float | None:
    if "retry-after-ms" not in headers and "retry-after" not in headers:
        return None
    # the wall clock is read only for the HTTP-date form of retry-after
    return parse_retry_after(headers, now_wall)


def _read_error(status: int, body: bytes) -> tuple[str, str | None, str | None]:
    """(message, error.type, error.code) from an error body, which may be empty or not JSON.
    The message never carries anything that looks like a key."""
    if not body or body.isspace():
        return f"HTTP {status} with an empty body", None, None
    try:
        data = _loads(body)
    except ValueError:
        excerpt = snippet(body, 160)
        message = f"HTTP {status} with a non-JSON body"
        if excerpt and not excerpt.startswith("<"):
            message += f": {excerpt}"
        return scrub_secrets(message), None, None
    error = data.get("error") if isinstance(data, dict) else None
    etype: str | None = None
    code: str | None = None
    message_value: object = None
    if isinstance(error, dict):
        message_value = error.get("message")
        raw_type = error.get("type")
        raw_code = error.get("code")
        etype = raw_type if isinstance(raw_type, str) else None
        code = str(raw_code) if raw_code is not None and raw_code != "" else None
    elif isinstance(error, str):
        message_value = error
    elif isinstance(data, dict):
        message_value = data.get("message")
    if isinstance(message_value, str) and message_value.strip():
        return scrub_secrets(message_value), etype, code
    detail = etype or code
    if error is None:
        return f"HTTP {status} without an error object", etype, code
    return f"HTTP {status}" + (f" ({detail})" if detail else ""), etype, code
