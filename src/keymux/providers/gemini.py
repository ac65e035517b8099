"""Google's Generative Language API (``v1beta``), spoken natively.

Chat is ``POST {base}/v1beta/models/{model}:generateContent`` (``:streamGenerateContent?alt=sse``
when streaming); embeddings always use ``:batchEmbedContents``, as ``google-genai`` does. The key
travels only in the ``x-goog-api-key`` header, never in the URL, so it cannot leak through a
logged URL.

keymux callers pass OpenAI-style ``messages``: ``user`` stays ``user``, ``assistant`` becomes
``model``, ``system`` messages become ``systemInstruction``, and consecutive turns of one role are
merged. OpenAI sampling parameters (``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``n``, …)
go into ``generationConfig``; Gemini-native fields pass through.

A prompt that Gemini blocks (``promptFeedback.blockReason`` and no candidates) is an answer, not a
malformed body: ``parse`` returns ``text=""`` with ``finish_reason`` set to the block reason
(for example ``"SAFETY"``), the way OpenAI reports ``content_filter``. Retrying the same prompt on
another key would be blocked again.

Errors are ``google.rpc.Status`` bodies (``code``, ``status``, ``message`` and typed
``details``): the window of a 429 is read from the ``QuotaFailure`` quotaId (``PerDay`` parks the
key until the daily reset, midnight Pacific time), the wait from ``RetryInfo.retryDelay``. Gemini
sends no rate-limit headers.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from .._errors import UnsupportedError
from .._headers import parse_proto_duration, parse_retry_after
from .._secret import scrub_secrets
from .._types import USER_AGENT, HttpRequest, Kind, Outcome, Parsed, Prepared, RateSnapshot, Usage
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

__all__ = ["GeminiAdapter", "GeminiStreamDecoder"]

PROVIDER = "gemini"
API_VERSION = "v1beta"

#: HTTP status -> google.rpc.Code name, for the error answers keymux writes in Google's shape
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_JSON_HEADERS = MappingProxyType({"content-type": "application/json", "user-agent": USER_AGENT})
_STREAM_HEADERS = MappingProxyType(
    {"content-type": "application/json", "accept": "text/event-stream", "user-agent": USER_AGENT}
)
DEFAULT_OUTPUT_TOKENS = 256

#: caller parameter -> generationConfig field, in precedence order (a later name wins)
_GENERATION: tuple[tuple[str, str], ...] = (
    ("temperature", "temperature"),
    ("topP", "topP"),
    ("top_p", "topP"),
    ("topK", "topK"),
    ("top_k", "topK"),
    ("maxOutputTokens", "maxOutputTokens"),
    ("max_output_tokens", "maxOutputTokens"),
    ("max_completion_tokens", "maxOutputTokens"),
    ("max_tokens", "maxOutputTokens"),
    ("stopSequences", "stopSequences"),
    ("stop_sequences", "stopSequences"),
    ("stop", "stopSequences"),
    ("candidateCount", "candidateCount"),
    ("candidate_count", "candidateCount"),
    ("n", "candidateCount"),
    ("seed", "seed"),
    ("presencePenalty", "presencePenalty"),
    ("presence_penalty", "presencePenalty"),
    ("frequencyPenalty", "frequencyPenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("responseMimeType", "responseMimeType"),
    ("response_mime_type", "responseMimeType"),
    ("responseSchema", "responseSchema"),
    ("response_schema", "responseSchema"),
    ("responseJsonSchema", "responseJsonSchema"),
    ("response_json_schema", "responseJsonSchema"),
    ("responseModalities", "responseModalities"),
    ("response_modalities", "responseModalities"),
    ("thinkingConfig", "thinkingConfig"),
    ("thinking_config", "thinkingConfig"),
)
_GENERATION_NAMES = frozenset(name for name, _ in _GENERATION)
#: top-level request fields a caller may spell the Python way
_TOP_LEVEL = {
    "safety_settings": "safetySettings",
    "tool_config": "toolConfig",
    "cached_content": "cachedContent",
}
_CHAT_HANDLED = frozenset(
    {
        "messages",
        "model",
        "stream",
        "generationConfig",
        "generation_config",
        "systemInstruction",
        "system_instruction",
        "response_format",
    }
)
#: embed parameter -> field of each batchEmbedContents request
_EMBED: dict[str, str] = {
    "dimensions": "outputDimensionality",
    "output_dimensionality": "outputDimensionality",
    "outputDimensionality": "outputDimensionality",
    "task_type": "taskType",
    "taskType": "taskType",
    "title": "title",
}
_EMBED_HANDLED = frozenset({"input", "model", "stream", "encoding_format"})

_RETRYABLE_STREAM_STATUSES = frozenset({"UNAVAILABLE", "INTERNAL"})
_KEY_INVALID_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
_RETRY_IN_RE = re.compile(r"retry in (\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)
_TYPE_PREFIX = "type.googleapis.com/google.rpc."


def model_resource(model: str) -> str:
    """``"gemini-2.5-flash"`` or ``"models/gemini-2.5-flash"`` -> ``"models/gemini-2.5-flash"``
    (``tunedModels/...`` stays as it is)."""
    if not isinstance(model, str) or not model.strip("/ "):
        raise bad(PROVIDER, f"model must be a non-empty string, got {model!r}")
    name = model.strip().strip("/")
    if not name.startswith(("models/", "tunedModels/")):
        name = "models/" + name
    return name


def _image_part(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An OpenAI ``image_url`` part as Gemini ``inlineData`` (data URL) or ``fileData``."""
    url = image_source(
        part, where, PROVIDER, schemes=("http://", "https://", "gs://"), named="a file URI"
    )
    if isinstance(url, InlineImage):
        return {"inlineData": {"mimeType": url.media_type, "data": url.data}}
    return {"fileData": {"fileUri": url}}


def _parts(content: Any, where: str) -> list[Any]:
    """A message content as Gemini parts: a str, OpenAI parts or Gemini-native parts."""
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise bad(PROVIDER, f"{where}: content must be a string or a list of content parts")
    parts: list[Any] = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            parts.append({"text": part})
            continue
        if not isinstance(part, Mapping):
            raise bad(PROVIDER, f"{where}.content[{i}]: a content part must be an object")
        kind = part.get("type")
        if kind is None:  # a Gemini-native part ({"text"}, {"inlineData"}, {"functionCall"}, …)
            parts.append(part)
        elif kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad(PROVIDER, f"{where}.content[{i}]: a text part needs a string 'text'")
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image_part(part, f"{where}.content[{i}]"))
        else:
            raise bad(
                PROVIDER, f"{where}.content[{i}]: part type {kind!r} is not supported for Gemini"
            )
    return parts


def _system_text(content: Any, where: str) -> str:
    texts: list[str] = []
    for part in _parts(content, where):
        text = part.get("text") if isinstance(part, Mapping) else None
        if not isinstance(text, str):
            raise bad(PROVIDER, f"{where}: a system message may hold only text")
        texts.append(text)
    return "\n\n".join(texts)


#: how Gemini's generateContent takes a conversation
_TURNS = Turns(
    provider=PROVIDER,
    roles={"user": "user", "assistant": "model", "model": "model"},
    field="parts",
    content=_parts,
    system_text=_system_text,
    merge=lambda earlier, later: [*earlier, *later],
    tool_results="Gemini functionResponse parts",
)


def _system_instruction(given: Any, texts: list[str]) -> Any:
    """A caller's own ``systemInstruction`` combined with the system messages."""
    if given is None or given == "":
        return {"parts": [{"text": "\n\n".join(texts)}]} if texts else None
    if isinstance(given, str):
        parts: list[Any] = [{"text": given}]
    elif isinstance(given, Mapping) and isinstance(given.get("parts"), list):
        parts = list(given["parts"])
    else:
        raise bad(PROVIDER, "systemInstruction must be a string or a Content object with 'parts'")
    if texts:
        parts.append({"text": "\n\n".join(texts)})
    return {"parts": parts}


def _response_format(value: Any, config: dict[str, Any]) -> None:
    """OpenAI ``response_format`` -> ``responseMimeType`` (+ ``responseJsonSchema``)."""
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise bad(PROVIDER, "response_format json_schema needs json_schema.schema")
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = schema
        return
    raise bad(
        PROVIDER, f"response_format {value!r} is not supported (use text, json_object, json_schema)"
    )


def _chat_body(params: Mapping[str, Any]) -> dict[str, Any]:
    system, contents = convert_messages(params.get("messages"), _TURNS)
    body: dict[str, Any] = {"contents": contents}
    given = params.get("generationConfig")
    if given is None:
        given = params.get("generation_config")
    if given is not None and not isinstance(given, Mapping):
        raise bad(PROVIDER, "generationConfig must be an object")
    config: dict[str, Any] = dict(given) if given else {}
    if params.get("response_format") is not None:
        _response_format(params["response_format"], config)
    for name, field in _GENERATION:
        value = params.get(name)
        if value is not None:
            config[field] = value
    if config.get("stopSequences") is not None:
        config["stopSequences"] = stop_sequences(config["stopSequences"], PROVIDER)
    instruction = params.get("systemInstruction")
    if instruction is None:
        instruction = params.get("system_instruction")
    instruction = _system_instruction(instruction, system)
    if instruction is not None:
        body["systemInstruction"] = instruction
    for key, value in params.items():
        if key not in _CHAT_HANDLED and key not in _GENERATION_NAMES:
            body[_TOP_LEVEL.get(key, key)] = value
    if config:
        body["generationConfig"] = config
    return body


def _embed_body(params: Mapping[str, Any], resource: str) -> dict[str, Any]:
    texts = params.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if (
        not isinstance(texts, list | tuple)
        or not texts
        or not all(isinstance(t, str) for t in texts)
    ):
        raise bad(PROVIDER, "input must be a string or a non-empty list of strings")
    encoding = params.get("encoding_format")
    if encoding not in (None, "float"):
        raise bad(
            PROVIDER, f"encoding_format {encoding!r} is not supported (Gemini returns floats)"
        )
    extra: dict[str, Any] = {}
    for key, value in params.items():
        if key in _EMBED_HANDLED or value is None:
            continue
        extra[_EMBED.get(key, key)] = value
    requests = [{"model": resource, "content": {"parts": [{"text": t}]}, **extra} for t in texts]
    return {"requests": requests}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(meta: Any) -> Usage | None:
    """usageMetadata -> Usage: prompt -> input; candidates + thoughts -> output."""
    if not isinstance(meta, Mapping):
        return None
    return Usage(
        input_tokens=_int(meta.get("promptTokenCount")),
        output_tokens=_int(meta.get("candidatesTokenCount")) + _int(meta.get("thoughtsTokenCount")),
    )


def _first_candidate(candidates: list[Any]) -> Any:
    """The candidate with index 0 (an absent index is 0), else None."""
    for cand in candidates:
        if not isinstance(cand, Mapping):
            raise ValueError("gemini: a candidate is not an object")
        if _int(cand.get("index")) == 0:
            return cand
    return None


def _candidate_text(cand: Any) -> str:
    """The answer text of one candidate (thought summaries left out); ValueError on garbage."""
    if not isinstance(cand, Mapping):
        raise ValueError("gemini: a candidate is not an object")
    content = cand.get("content")
    if content is None:
        return ""  # e.g. finishReason SAFETY, or MAX_TOKENS spent on thinking
    if not isinstance(content, Mapping):
        raise ValueError("gemini: candidate.content is not an object")
    parts = content.get("parts")
    if parts is None:
        return ""
    if not isinstance(parts, list):
        raise ValueError("gemini: candidate.content.parts is not a list")
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, Mapping)
        and isinstance(part.get("text"), str)
        and not part.get("thought")
    )


def _block_reason(body: Mapping[str, Any]) -> str | None:
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, Mapping) else None
    return reason if isinstance(reason, str) else None


@functools.cache
def _pacific() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database (e.g. Windows without tzdata): standard time, waits longer
        return timezone(timedelta(hours=-8), "PST")


def seconds_until_pacific_midnight(now_wall: float) -> float:
    """Gemini's daily quotas reset at midnight Pacific time (ai.google.dev rate-limits page)."""
    tz = _pacific()
    now = datetime.fromtimestamp(now_wall, tz)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    return max(0.0, midnight.timestamp() - now_wall)


#: "Quota exceeded for metric: ..., limit: 20, model: gemini-2.5-flash"
_QUOTA_LIMIT_RE = re.compile(r"quota exceeded for metric:[^\n]*?\blimit:\s*(\d+)", re.IGNORECASE)


def _retry_in(message: str) -> float | None:
    match = _RETRY_IN_RE.search(message)
    if not match:
        return None
    value = float(match.group(1))
    return value / 1000.0 if match.group(2).lower() == "ms" else value


def classify_gemini(
    status: int, headers: Mapping[str, str], body: bytes, now_wall: float
) -> Outcome:
    """The pure classification of one non-2xx Gemini answer: an invalid or expired key and spent
    credits by ``ErrorInfo`` reason and message first, then by status; a 429's window from its
    ``QuotaFailure`` quota ids, its wait from ``RetryInfo``, the message or ``retry-after``."""
    rpc_status: str | None = None
    message = ""
    reasons: list[str] = []
    quota_ids: list[str] = []
    violations: list[dict[str, Any]] = []
    retry_delay: float | None = None
    data = read_json(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):  # a streamed error array
        error = data[0].get("error")
    if isinstance(error, dict):
        if isinstance(error.get("status"), str):
            rpc_status = error["status"]
        if isinstance(error.get("message"), str):
            message = error["message"]
        details = error.get("details")
        for detail in details if isinstance(details, list) else ():
            if not isinstance(detail, dict):
                continue
            detail_type = str(detail.get("@type", "")).removeprefix(_TYPE_PREFIX)
            if detail_type == "ErrorInfo" and isinstance(detail.get("reason"), str):
                reasons.append(detail["reason"])
            elif detail_type == "QuotaFailure" and isinstance(detail.get("violations"), list):
                found = [v for v in detail["violations"] if isinstance(v, dict)]
                violations.extend(found)
                quota_ids.extend(v["quotaId"] for v in found if isinstance(v.get("quotaId"), str))
            elif detail_type == "RetryInfo":
                retry_delay = parse_proto_duration(detail.get("retryDelay"))
    elif body:
        message = snippet(body)
    message = scrub_secrets(message) or f"HTTP {status} from Gemini"
    lower = message.lower()
    code = reasons[0] if reasons else None
    retry_after: float | None = None
    limit: float | None = None
    dimension: str | None = None
    period: float | None = None

    if (
        any(r in _KEY_INVALID_REASONS for r in reasons)
        or "api key not valid" in lower
        or "api key expired" in lower
    ):
        kind = Kind.KEY_INVALID
    elif "credits are depleted" in lower or (
        rpc_status == "FAILED_PRECONDITION" and "billing" in lower
    ):
        kind = Kind.QUOTA_SPENT
    elif status in (401, 403):
        kind = Kind.KEY_INVALID
    elif status == 429:
        daily = [q for q in quota_ids if "PerDay" in q]
        if code is None and (daily or quota_ids):
            code = (daily or quota_ids)[0]
        retry_after = retry_delay
        if retry_after is None:
            retry_after = _retry_in(message)
        if retry_after is None:
            retry_after = parse_retry_after(lowered(headers), now_wall)
        if daily:
            kind = Kind.DAILY_LIMIT
            retry_after = max(retry_after or 0.0, seconds_until_pacific_midnight(now_wall))
        else:
            kind = Kind.RATE_LIMITED
        limit, dimension, period = _violated(violations, bool(daily), message)
    elif status == 503:
        kind = Kind.OVERLOADED
    elif status >= 500 or status in (408, 409):
        kind = Kind.SERVER_ERROR
    elif status == 413:
        kind = Kind.TOO_LARGE
    else:
        kind = Kind.BAD_REQUEST
    if retry_after is None and kind in (Kind.OVERLOADED, Kind.SERVER_ERROR):
        retry_after = retry_delay  # not documented for 5xx, but honoured if Google sends it
        if retry_after is None:
            retry_after = parse_retry_after(lowered(headers), now_wall)
    return Outcome(
        kind=kind,
        status=status,
        message=message,
        retry_after=retry_after,
        error_type=rpc_status,
        code=code,
        limit=limit,
        dimension=dimension,
        period=period,
    )


def _violated(
    violations: list[dict[str, Any]], daily: bool, message: str
) -> tuple[float | None, str | None, float | None]:
    """(limit, "requests" | "tokens", period in seconds) of the quota a 429 says was exceeded:
    its ``quotaValue``, and what its ``quotaId`` (or ``quotaMetric``) counts and per what
    (``GenerateRequestsPerMinutePerProjectPerModel-FreeTier``: requests per minute); the
    message's "limit: N" when no violation carries a value."""
    chosen: dict[str, Any] | None = None
    for violation in violations:
        quota_id = violation.get("quotaId")
        per_day = isinstance(quota_id, str) and "PerDay" in quota_id
        if per_day == daily:
            chosen = violation
            break
    if chosen is None and violations:
        chosen = violations[0]
    limit: float | None = None
    dimension: str | None = None
    period: float | None = None
    if chosen is not None:
        value = chosen.get("quotaValue")
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number) and number > 0:
                limit = number
        names = " ".join(str(chosen.get(field, "")) for field in ("quotaId", "quotaMetric")).lower()
        if "token" in names:
            dimension = "tokens"
        elif "request" in names:
            dimension = "requests"
        if "perminute" in names:
            period = 60.0
        elif "perday" in names:
            period = 86400.0
    if limit is None:
        match = _QUOTA_LIMIT_RE.search(message)
        if match is not None:
            limit = float(match.group(1))
    return limit, dimension, period


class GeminiStreamDecoder:
    """Reads one Gemini SSE stream: every event is a whole GenerateContentResponse."""

    __slots__ = ("_finish", "_text", "_usage", "done", "model")

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self._text: list[str] = []
        self._usage = Usage()
        self._finish: str | None = None

    def feed(self, event: SSEEvent) -> str | None:
        raw = event.data
        if raw.strip() == "[DONE]":  # not sent by Gemini; harmless from a compatible proxy
            self.done = True
            return None
        data = event_object(raw, PROVIDER)
        error = data.get("error")
        if error is not None:
            error = error if isinstance(error, dict) else {"message": str(error)}
            status = error.get("status") if isinstance(error.get("status"), str) else None
            message = error.get("message")
            text = scrub_secrets(message) if isinstance(message, str) else ""
            text = text or "stream error"
            retryable = status in _RETRYABLE_STREAM_STATUSES or (
                status is None and error.get("code") in (500, 503)
            )
            raise StreamFailure(text, error_type=status, retryable=retryable)
        model = data.get("modelVersion")
        if isinstance(model, str):
            self.model = model
        usage = _usage(data.get("usageMetadata"))
        if usage is not None:
            self._usage = usage
        candidates = data.get("candidates")
        if isinstance(candidates, list) and candidates:
            cand = _first_candidate(candidates)
            if cand is None:  # another candidate's chunk (n > 1): keymux reads candidate 0
                return None
            text = _candidate_text(cand)
            finish = cand.get("finishReason")
            if isinstance(finish, str):
                self._finish = finish
                self.done = True
            if text:
                self._text.append(text)
                return text
            return None
        if candidates is not None and not isinstance(candidates, list):
            raise ValueError("gemini stream: 'candidates' is not a list")
        block = _block_reason(data)
        if block is not None:
            self._finish = block
            self.done = True
        return None

    def result(self) -> Parsed:
        return Parsed(
            text="".join(self._text),
            model=self.model,
            usage=Usage(self._usage.input_tokens, self._usage.output_tokens),
            finish_reason=self._finish,
        )


class GeminiAdapter(AdapterBase):
    """Gemini Generative Language API. Stateless: one instance serves every key and request."""

    name = PROVIDER
    default_base_url = "https://generativelanguage.googleapis.com"
    default_models: Mapping[str, str] = {
        "chat": "gemini-2.5-flash",
        "embed": "gemini-embedding-001",
    }
    endpoints = frozenset({"chat", "embed"})
    #: where the key goes (never a ``key=`` query parameter: URLs end up in logs)
    auth_header = "x-goog-api-key"
    auth_prefix = ""

    def limit_scope(self, model: str | None) -> str:
        """The model without its ``models/`` resource prefix (both name the same limits)."""
        return model.removeprefix("models/") if model else ""

    def error_body(self, status: int, message: str) -> bytes:
        """An error answer in Google's own shape (for answers keymux makes itself)."""
        code = _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
        return dumps({"error": {"code": status, "message": message, "status": code}}, PROVIDER)

    def prepare(
        self, endpoint: str, params: Mapping[str, Any], *, model: str | None, stream: bool
    ) -> Prepared:
        if endpoint not in self.endpoints:
            raise UnsupportedError(
                f"gemini: unknown endpoint {endpoint!r}; Gemini supports 'chat' and 'embed'",
                provider=PROVIDER,
            )
        resource = model_resource(model or params.get("model") or self.default_models[endpoint])
        headers = _JSON_HEADERS
        if endpoint == "embed":
            if stream:
                raise UnsupportedError("gemini: embeddings cannot be streamed", provider=PROVIDER)
            body = _embed_body(params, resource)
            method = "batchEmbedContents"
        else:
            body = _chat_body(params)
            if stream:
                method = "streamGenerateContent?alt=sse"
                headers = _STREAM_HEADERS
            else:
                method = "generateContent"
        path = f"/{API_VERSION}/{quote(resource, safe='/')}:{method}"
        return Prepared(
            "POST",
            path,
            headers,
            dumps(body, PROVIDER),
            resource.removeprefix("models/"),
            "x-goog-api-key",
        )

    def parse(self, endpoint: str, body: Any, *, model: str | None = None) -> Parsed:
        if not isinstance(body, dict):
            raise ValueError(f"gemini: the answer is not a JSON object ({type(body).__name__})")
        if endpoint == "embed":
            return self._parse_embed(body, model)
        if endpoint != "chat":
            raise UnsupportedError(f"gemini: unknown endpoint {endpoint!r}", provider=PROVIDER)
        version = body.get("modelVersion")
        usage = _usage(body.get("usageMetadata")) or Usage()
        candidates = body.get("candidates")
        if isinstance(candidates, list) and candidates:
            cand = _first_candidate(candidates) or candidates[0]
            text = _candidate_text(cand)
            finish = cand.get("finishReason")
        elif candidates is None or candidates == []:
            finish = _block_reason(body)
            if finish is None:
                raise ValueError("gemini: the answer has no candidates and no promptFeedback")
            text = ""  # the prompt was blocked: an answer, with the block reason as finish
        else:
            raise ValueError("gemini: 'candidates' is not a list")
        return Parsed(
            text=text,
            model=version if isinstance(version, str) else None,
            usage=usage,
            finish_reason=finish if isinstance(finish, str) else None,
        )

    @staticmethod
    def _parse_embed(body: Mapping[str, Any], model: str | None) -> Parsed:
        """A batchEmbedContents answer; it names no model, so the one asked for is given."""
        items = body.get("embeddings")
        if items is None and "embedding" in body:
            items = [body["embedding"]]
        if not isinstance(items, list):
            raise ValueError("gemini: the answer has no 'embeddings' list")
        vectors: list[list[float]] = []
        for i, item in enumerate(items):
            values = item.get("values") if isinstance(item, Mapping) else None
            if not isinstance(values, list):
                raise ValueError(f"gemini: embeddings[{i}] has no 'values' list")
            vectors.append(values)
        usage = _usage(body.get("usageMetadata")) or Usage()
        return Parsed(text=None, model=model, usage=usage, embeddings=vectors)

    def stream_decoder(self) -> GeminiStreamDecoder:
        return GeminiStreamDecoder()

    def usage_of(self, body: Any) -> Usage:
        """The usage a JSON answer of any endpoint reports (zeros when it reports none)."""
        meta = body.get("usageMetadata") if isinstance(body, dict) else None
        return _usage(meta) or Usage()

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, now_wall: float
    ) -> Outcome:
        # wall time is needed for the daily reset and an HTTP-date retry-after
        return classify_gemini(status, headers, body, now_wall)

    def rate_snapshot(self, headers: Mapping[str, str], now_wall: float) -> RateSnapshot | None:
        return None  # Gemini sends no rate-limit headers

    def estimate_tokens(self, endpoint: str, params: Mapping[str, Any]) -> int:
        if endpoint == "embed":
            texts = params.get("input")
            if isinstance(texts, str):
                texts = [texts]
            if not isinstance(texts, list | tuple):
                return 0
            return sum(math.ceil(len(t) / 4) for t in texts if isinstance(t, str))
        config = params.get("generationConfig") or params.get("generation_config")
        configured = config.get("maxOutputTokens") if isinstance(config, Mapping) else None
        output = (
            positive_int(params.get("max_tokens"))
            or positive_int(params.get("max_completion_tokens"))
            or positive_int(params.get("maxOutputTokens"))
            or positive_int(configured)
            or DEFAULT_OUTPUT_TOKENS
        )
        candidates = positive_int(params.get("n")) or 1
        return prompt_tokens(params.get("messages")) + output * candidates

    def probe(self, *, base_url: str, api_key: str) -> HttpRequest:
        url = f"{base_url.rstrip('/')}/{API_VERSION}/models?pageSize=1"
        return HttpRequest("GET", url, {"x-goog-api-key": api_key, "user-agent": USER_AGENT})
