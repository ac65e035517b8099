"""Google Gemini (``/v1beta/models/{model}:{method}``, the same under ``/v1``): google.rpc.Status
errors, no rate headers.

The key comes in ``x-goog-api-key`` (or ``?key=``). Limits are per model. A 429 says which
window in its QuotaFailure ``quotaId`` (``PerMinute`` / ``PerDay``) and when to retry in
RetryInfo ``retryDelay``.
``:streamGenerateContent?alt=sse`` is data-only SSE without an end marker: the final chunk
carries ``finishReason`` and the full ``usageMetadata``. Without ``alt=sse`` it is a JSON array.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._content import (
    BadRequest,
    ChatPlan,
    EmbedPlan,
    check_dimensions,
    plan_reply,
    prompt_tokens,
    text_of,
    text_tokens,
)
from ._dialect import Ctx, Dialect, Reply, StreamPlan, dumps
from ._limits import Verdict, proto_duration

__all__ = ["GEMINI_METHODS", "GeminiDialect"]

#: URL method -> emulator operation
GEMINI_METHODS = {
    "generateContent": "chat",
    "streamGenerateContent": "chat",
    "embedContent": "embed",
    "batchEmbedContents": "embed",
    "countTokens": "count",
}
_MODELS = (
    ("gemini-2.5-flash", "Gemini 2.5 Flash", ["generateContent", "countTokens"]),
    ("gemini-2.5-pro", "Gemini 2.5 Pro", ["generateContent", "countTokens"]),
    ("gemini-embedding-001", "Gemini Embedding 001", ["embedContent", "batchEmbedContents"]),
)
_HELP = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [
        {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }
    ],
}
_QUOTA = {
    # dimension -> (quotaMetric suffix, quotaId)
    "rpm": (
        "generate_content_free_tier_requests",
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
    ),
    "tpm": (
        "generate_content_free_tier_input_token_count",
        "GenerateContentInputTokensPerModelPerMinute-FreeTier",
    ),
    "rpd": (
        "generate_content_free_tier_requests",
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    ),
}
_INTERNAL = {
    "code": 500,
    "message": "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    "status": "INTERNAL",
}
_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def split_target(target: str) -> tuple[str, str]:
    """``"gemini-2.5-flash:generateContent"`` -> (model, method)."""
    model, _, method = target.rpartition(":")
    return model, method


def _max_output(config: object) -> int | None:
    if not isinstance(config, dict):
        return None
    value = config.get("maxOutputTokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(
            "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), expected a "
            "positive integer."
        )
    return value


class GeminiDialect(Dialect):
    """generativelanguage.googleapis.com."""

    provider = "gemini"
    request_id_header = None
    default_model = "gemini-2.5-flash"
    default_embedding_model = "gemini-embedding-001"

    def model_scope(self, model: str) -> str:
        """Per model; ``models/gemini-2.5-pro`` (a resource name) is ``gemini-2.5-pro``."""
        return model.removeprefix("models/")

    def credential(self, request: web.Request) -> str | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        return (key.strip() or None) if key else None

    def error(
        self, status: int, message: str, details: list[dict[str, Any]] | None = None
    ) -> Reply:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _STATUS.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return Reply(status, {"error": error})

    def missing_key(self, ctx: Ctx) -> Reply:
        return self.error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
        )

    def invalid_key(self, secret: str, ctx: Ctx) -> Reply:
        message = "API key not valid. Please pass a valid API key."
        return self.error(
            400,
            message,
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": message,
                },
            ],
        )

    def bad_json(self, ctx: Ctx) -> Reply:
        return self.error(400, "Invalid JSON payload received. Unexpected token.")

    def bad_request(self, exc: BadRequest, ctx: Ctx) -> Reply:
        return self.error(exc.status, exc.message)

    def _model(self, request: web.Request) -> tuple[str, str]:
        model, method = split_target(request.match_info.get("target", ""))
        return model.removeprefix("models/") or self.default_model, method

    def parse_chat(self, body: dict[str, Any], request: web.Request) -> ChatPlan:
        contents = body.get("contents")
        if not contents:
            raise BadRequest("* GenerateContentRequest.contents: contents is not specified\n")
        if isinstance(contents, dict):
            contents = [contents]
        if not isinstance(contents, list):
            raise BadRequest(
                'Invalid JSON payload received. Unknown name "contents": Proto field is not '
                "repeating, cannot start list."
            )
        system = body.get("systemInstruction") or body.get("system_instruction")
        texts = [text_of(system)] if system else []
        last_user = ""
        for content in contents:
            if not isinstance(content, dict):
                raise BadRequest(
                    "* GenerateContentRequest.contents: each content must be an "
                    "object with 'parts'\n"
                )
            text = text_of(content)
            texts.append(text)
            if content.get("role", "user") == "user":
                last_user = text
        config = body.get("generationConfig", body.get("generation_config"))
        chunks, truncated = plan_reply(self.provider, last_user, _max_output(config))
        model, method = self._model(request)
        return ChatPlan(
            model=model,
            prompt_tokens=prompt_tokens(texts),
            chunks=chunks,
            truncated=truncated,
            stream=method == "streamGenerateContent",
            sse=request.query.get("alt") == "sse",
        )

    def count_tokens(self, body: dict[str, Any], request: web.Request, ctx: Ctx) -> Reply:
        # ``contents``, or a whole ``generateContentRequest`` (with its system instruction)
        inner = body.get("generateContentRequest")
        plan = self.parse_chat(inner if isinstance(inner, dict) else body, request)
        tokens = plan.prompt_tokens
        return Reply(
            200,
            {
                "totalTokens": tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
            },
        )

    def parse_embed(self, body: dict[str, Any], request: web.Request) -> EmbedPlan:
        model, method = self._model(request)
        if method == "batchEmbedContents":
            requests = body.get("requests")
            if not requests or not isinstance(requests, list):
                raise BadRequest(
                    "* BatchEmbedContentsRequest.requests: requests is not specified\n"
                )
            items = requests
        else:
            items = [body]
        texts: list[str] = []
        dims = 8
        for index, item in enumerate(items):
            content = item.get("content") if isinstance(item, dict) else None
            if not isinstance(content, dict):
                where = (
                    f"requests[{index}].content" if method == "batchEmbedContents" else ("content")
                )
                raise BadRequest(f"* EmbedContentRequest.{where}: content is not specified\n")
            texts.append(text_of(content))
            size = item.get("outputDimensionality")
            if size is not None:
                dims = check_dimensions(size, "outputDimensionality")
        return EmbedPlan(
            model=model,
            texts=texts,
            tokens=sum(text_tokens(text) for text in texts),
            dimensions=dims,
            batch=method == "batchEmbedContents",
        )

    def _exhausted(self, dimension: str, limit: int, wait: float, model: str) -> Reply:
        metric, quota_id = _QUOTA[dimension]
        delay = proto_duration(wait)
        message = (
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, head to: "
            "https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, "
            "head to: https://ai.dev/usage?tab=rate-limit. \n"
            f"* Quota exceeded for metric: generativelanguage.googleapis.com/{metric}, "
            f"limit: {limit}, model: {model}\nPlease retry in {delay}."
        )
        return self.error(
            429,
            message,
            [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
                            "quotaId": quota_id,
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": str(limit),
                        }
                    ],
                },
                _HELP,
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
            ],
        )

    def rate_limited(self, verdict: Verdict, ctx: Ctx) -> Reply:
        return self._exhausted(verdict.dimension, verdict.limit, verdict.reset_in, ctx.model)

    def quota_spent(self, rpd: int | None, day_reset_in: float, ctx: Ctx) -> Reply:
        return self._exhausted("rpd", rpd or 250, day_reset_in, ctx.model)

    def server_error(self, ctx: Ctx) -> Reply:
        return Reply(500, {"error": dict(_INTERNAL)})

    def overloaded(self, ctx: Ctx) -> Reply:
        return self.error(503, "The model is overloaded. Please try again later.")

    def usage(self, plan: ChatPlan) -> dict[str, Any]:
        return {
            "promptTokenCount": plan.prompt_tokens,
            "candidatesTokenCount": plan.completion_tokens,
            "totalTokenCount": plan.tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": plan.prompt_tokens}],
        }

    def response(
        self, plan: ChatPlan, ctx: Ctx, text: str, *, final: bool = True
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
        if final:
            candidate["finishReason"] = "MAX_TOKENS" if plan.truncated else "STOP"
        candidate["index"] = 0
        usage = (
            self.usage(plan)
            if final
            else {"promptTokenCount": plan.prompt_tokens, "totalTokenCount": plan.prompt_tokens}
        )
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": plan.model,
            "responseId": f"emu{ctx.seq:x}",
        }

    def chat(self, plan: ChatPlan, ctx: Ctx) -> Reply:
        return Reply(200, self.response(plan, ctx, plan.text))

    def chat_stub(self, plan: ChatPlan, ctx: Ctx) -> Reply:
        return Reply(
            200,
            {
                "usageMetadata": self.usage(plan),
                "modelVersion": plan.model,
                "responseId": f"emu{ctx.seq:x}",
            },
        )

    def _frames(self, plan: ChatPlan, items: list[bytes], last: bytes) -> StreamPlan:
        """SSE frames, or the pieces of one incrementally sent JSON array."""
        error = dumps({"error": _INTERNAL})
        if plan.sse:
            return StreamPlan(
                [],
                [b"data: " + i + b"\n\n" for i in items],
                [b"data: " + last + b"\n\n"],
                b"data: " + error + b"\n\n",
            )
        content = [(b"[" if n == 0 else b",\r\n") + i for n, i in enumerate(items)]
        tail = (b",\r\n" if items else b"[") + last + b"]"
        return StreamPlan(
            [],
            content,
            [tail],
            (b",\r\n" if items else b"[") + error + b"]",
            content_type="application/json",
        )

    def stream(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        items = [dumps(self.response(plan, ctx, text, final=False)) for text in plan.chunks]
        return self._frames(plan, items, dumps(self.response(plan, ctx, "")))

    def stream_stub(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        return self._frames(plan, [], dumps(self.chat_stub(plan, ctx).body))

    def stream_malformed(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        return self._frames(
            plan, [b'{"candidates":[{"content":{"role":"mod'], dumps(self.response(plan, ctx, ""))
        )

    def embed(self, plan: EmbedPlan, vectors: list[list[float]], ctx: Ctx) -> Reply:
        if plan.batch:
            return Reply(200, {"embeddings": [{"values": v} for v in vectors]})
        return Reply(200, {"embedding": {"values": vectors[0]}})

    def embed_stub(self, plan: EmbedPlan, ctx: Ctx) -> Reply:
        return Reply(200, {})

    def model_object(self, model_id: str) -> dict[str, Any]:
        name, methods = model_id, ["generateContent", "countTokens"]
        for known, known_name, known_methods in _MODELS:
            if known == model_id:
                name, methods = known_name, known_methods
                break
        return {
            "name": f"models/{model_id}",
            "version": "001",
            "displayName": name,
            "description": f"{name} (keymux emulator)",
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": methods,
            "temperature": 1.0,
            "maxTemperature": 2.0,
            "topP": 0.95,
            "topK": 64,
        }

    def models(self, ctx: Ctx) -> Reply:
        return Reply(200, {"models": [self.model_object(m) for m, _, _ in _MODELS]})

    def model(self, model_id: str, ctx: Ctx) -> Reply:
        return Reply(200, self.model_object(model_id.removeprefix("models/")))
