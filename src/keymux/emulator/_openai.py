"""OpenAI (``/v1/...``) and Groq (``/openai/v1/...``): the same wire format, Groq's quirks on top.

Groq's ``x-ratelimit-*-requests`` headers describe the per-day limit (rpd), ``*-tokens`` the
per-minute tokens; a request whose tokens alone exceed tpm is a 413; every 429 has
``retry-after``; ``x_groq`` rides in answers and in a stream's first and final chunk.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .._secret import mask
from ._content import (
    BadRequest,
    ChatPlan,
    EmbedPlan,
    check_dimensions,
    embedding_b64,
    plan_reply,
    prompt_tokens,
    text_of,
    text_tokens,
)
from ._dialect import Ctx, Dialect, Reply, StreamPlan, sse_data
from ._limits import Snapshot, Usage, Verdict, go_duration, retry_after

__all__ = ["GroqDialect", "OpenAIDialect"]

_RATE_DOCS = "Visit https://platform.openai.com/account/rate-limits to learn more."
_DONE = b"data: [DONE]\n\n"
_DIMENSION_TEXT = {
    "rpm": ("requests", "requests per min (RPM)"),
    "tpm": ("tokens", "tokens per min (TPM)"),
    "rpd": ("requests", "requests per day (RPD)"),
}


def _max_words(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(
                f"Invalid type for '{name}': expected an integer, but got a "
                f"{type(value).__name__} instead.",
                param=name,
                code="invalid_type",
            )
        if value < 1:
            raise BadRequest(
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
                f"{value} instead.",
                param=name,
                code="integer_below_min_value",
            )
        return value
    return None


def _headers(prefix: str, usage: Usage | None, kind: str, out: dict[str, str]) -> None:
    if usage is None:
        return
    out[f"{prefix}limit-{kind}"] = str(usage.limit)
    out[f"{prefix}remaining-{kind}"] = str(usage.remaining)
    out[f"{prefix}reset-{kind}"] = go_duration(usage.reset_in)


class OpenAIDialect(Dialect):
    """api.openai.com/v1."""

    provider = "openai"
    default_model = "gpt-4o-mini"
    default_embedding_model = "text-embedding-3-small"
    model_ids: tuple[str, ...] = (
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
    )

    # --- authentication -------------------------------------------------------------------

    def credential(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization")
        if auth is None or auth[:7].lower() != "bearer ":
            return None
        return auth[7:].strip() or None

    def error(
        self,
        status: int,
        message: str,
        type_: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        return Reply(status, body, headers or {})

    def missing_key(self, ctx: Ctx) -> Reply:
        return self.error(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password "
            "field (with blank username) if you're accessing the API from your browser and are "
            "prompted for a username and password. You can obtain an API key from "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
        )

    def invalid_key(self, secret: str, ctx: Ctx) -> Reply:
        return self.error(
            401,
            f"Incorrect API key provided: {mask(secret)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            code="invalid_api_key",
        )

    # --- request parsing ------------------------------------------------------------------

    def bad_json(self, ctx: Ctx) -> Reply:
        return self.error(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but "
            "what was sent was not valid JSON. If you have trouble figuring out how to fix this, "
            "please contact us through our help center at help.openai.com.)",
            "invalid_request_error",
        )

    def bad_request(self, exc: BadRequest, ctx: Ctx) -> Reply:
        return self.error(
            exc.status, exc.message, "invalid_request_error", param=exc.param, code=exc.code
        )

    def parse_chat(self, body: dict[str, Any], request: web.Request) -> ChatPlan:
        messages = body.get("messages")
        if messages is None:
            raise BadRequest(
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not isinstance(messages, list) or not messages:
            raise BadRequest(
                "Invalid 'messages': expected a non-empty array of message objects.",
                param="messages",
                code="invalid_value",
            )
        texts: list[str] = []
        last_user = ""
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequest(
                    f"Invalid 'messages[{index}]': expected an object with a 'role'.",
                    param=f"messages[{index}]",
                    code="invalid_type",
                )
            text = text_of(message.get("content"))
            texts.append(text)
            if message["role"] == "user":
                last_user = text
        model = body.get("model") or self.default_model
        if not isinstance(model, str):
            raise BadRequest("Invalid type for 'model': expected a string.", param="model")
        max_words = _max_words(body, "max_completion_tokens", "max_tokens")
        chunks, truncated = plan_reply(self.provider, last_user, max_words)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return ChatPlan(
            model=model,
            prompt_tokens=prompt_tokens(texts),
            chunks=chunks,
            truncated=truncated,
            stream=body.get("stream") is True,
            include_usage=include_usage,
        )

    def parse_embed(self, body: dict[str, Any], request: web.Request) -> EmbedPlan:
        raw = body.get("input")
        if raw is None:
            raise BadRequest(
                "Missing required parameter: 'input'.",
                param="input",
                code="missing_required_parameter",
            )
        items: list[Any] = raw if isinstance(raw, list) else [raw]
        if raw == [] or (items and all(isinstance(i, int) for i in items)):
            items = [raw]  # one input given as token ids
        texts: list[str] = []
        tokens = 0
        for item in items:
            if isinstance(item, str):
                texts.append(item)
                tokens += text_tokens(item)
            elif (
                isinstance(item, list)
                and item
                and all(isinstance(i, int) and not isinstance(i, bool) for i in item)
            ):
                texts.append(" ".join(map(str, item)))
                tokens += len(item)
            else:
                raise BadRequest(
                    "'$.input' is invalid. Please check the API reference: "
                    "https://platform.openai.com/docs/api-reference.",
                    param="input",
                )
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise BadRequest(
                f"Invalid value for 'encoding_format': {encoding!r}; expected 'float' or 'base64'.",
                param="encoding_format",
                code="invalid_value",
            )
        dims = body.get("dimensions")
        model = body.get("model") or self.default_embedding_model
        if not isinstance(model, str):
            raise BadRequest("Invalid type for 'model': expected a string.", param="model")
        return EmbedPlan(
            model=model,
            texts=texts,
            tokens=tokens,
            dimensions=8 if dims is None else check_dimensions(dims, "dimensions"),
            base64=encoding == "base64",
        )

    # --- refusals and faults --------------------------------------------------------------

    def rate_message(self, verdict: Verdict, model: str, wait: str) -> str:
        window = _DIMENSION_TEXT[verdict.dimension][1]
        if verdict.too_large:
            return (
                f"Request too large for {model} in organization org-emulator on {window}: "
                f"Limit {verdict.limit}, Requested {verdict.requested}. The input or output "
                f"tokens must be reduced in order to run successfully. {_RATE_DOCS}"
            )
        return (
            f"Rate limit reached for {model} in organization org-emulator on {window}: "
            f"Limit {verdict.limit}, Used {verdict.used}, Requested {verdict.requested}. "
            f"Please try again in {wait}. {_RATE_DOCS}"
        )

    def rate_limited(self, verdict: Verdict, ctx: Ctx) -> Reply:
        type_ = _DIMENSION_TEXT[verdict.dimension][0]
        message = self.rate_message(verdict, ctx.model, go_duration(verdict.reset_in))
        headers = {} if verdict.too_large else {"retry-after": retry_after(verdict.reset_in)}
        return self.error(429, message, type_, code="rate_limit_exceeded", headers=headers)

    def quota_spent(self, rpd: int | None, day_reset_in: float, ctx: Ctx) -> Reply:
        return self.error(
            429,
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            code="insufficient_quota",
        )

    def server_error(self, ctx: Ctx) -> Reply:
        return self.error(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )

    def overloaded(self, ctx: Ctx) -> Reply:
        return self.error(
            503,
            "The server is overloaded or not ready yet.",
            "service_unavailable_error",
            code="server_is_overloaded",
        )

    def stream_error_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": "The server had an error while processing your request. Sorry about "
                "that!",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }

    # --- headers --------------------------------------------------------------------------

    def rate_headers(self, snap: Snapshot, wall: float) -> dict[str, str]:
        out: dict[str, str] = {}
        _headers("x-ratelimit-", snap.rpm, "requests", out)
        _headers("x-ratelimit-", snap.tpm, "tokens", out)
        return out

    # --- answers --------------------------------------------------------------------------

    def usage(self, plan: ChatPlan) -> dict[str, Any]:
        return {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": plan.completion_tokens,
            "total_tokens": plan.tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def envelope(self, plan: ChatPlan, ctx: Ctx, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-emu{ctx.seq}",
            "object": obj,
            "created": int(ctx.wall),
            "model": plan.model,
            "system_fingerprint": "fp_keymux_emulator",
        }

    def chat(self, plan: ChatPlan, ctx: Ctx) -> Reply:
        body = self.envelope(plan, ctx, "chat.completion")
        body["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": plan.text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if plan.truncated else "stop",
            }
        ]
        body["usage"] = self.usage(plan)
        return Reply(200, body)

    def chat_stub(self, plan: ChatPlan, ctx: Ctx) -> Reply:
        return Reply(200, self.envelope(plan, ctx, "chat.completion"))

    def chunk(
        self,
        plan: ChatPlan,
        ctx: Ctx,
        delta: dict[str, Any],
        finish: str | None = None,
        *,
        first: bool = False,
    ) -> dict[str, Any]:
        body = self.envelope(plan, ctx, "chat.completion.chunk")
        body["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if plan.include_usage:
            body["usage"] = None
        return body

    def final_chunk(self, plan: ChatPlan, ctx: Ctx) -> dict[str, Any]:
        return self.chunk(plan, ctx, {}, "length" if plan.truncated else "stop")

    def stream(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        head = [sse_data(self.chunk(plan, ctx, {"role": "assistant", "content": ""}, first=True))]
        content = [sse_data(self.chunk(plan, ctx, {"content": text})) for text in plan.chunks]
        tail = [sse_data(self.final_chunk(plan, ctx))]
        if plan.include_usage:
            usage = self.envelope(plan, ctx, "chat.completion.chunk")
            usage["choices"] = []
            usage["usage"] = self.usage(plan)
            tail.append(sse_data(usage))
        tail.append(_DONE)
        return StreamPlan(head, content, tail, sse_data(self.stream_error_body()))

    def stream_stub(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        stub = sse_data(self.envelope(plan, ctx, "chat.completion.chunk"))
        return StreamPlan([], [stub], [_DONE], sse_data(self.stream_error_body()))

    def stream_malformed(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        broken = b'data: {"id":"chatcmpl-emu' + str(ctx.seq).encode() + b'","choices":[{"del\n\n'
        return StreamPlan([], [broken], [_DONE], sse_data(self.stream_error_body()))

    def embed(self, plan: EmbedPlan, vectors: list[list[float]], ctx: Ctx) -> Reply:
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": embedding_b64(vector) if plan.base64 else vector,
            }
            for index, vector in enumerate(vectors)
        ]
        return Reply(
            200,
            {
                "object": "list",
                "data": data,
                "model": plan.model,
                "usage": {"prompt_tokens": plan.tokens, "total_tokens": plan.tokens},
            },
        )

    def embed_stub(self, plan: EmbedPlan, ctx: Ctx) -> Reply:
        return Reply(200, {"object": "list", "model": plan.model})

    def model_object(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1721172741, "owned_by": "system"}

    def models(self, ctx: Ctx) -> Reply:
        return Reply(
            200, {"object": "list", "data": [self.model_object(m) for m in self.model_ids]}
        )

    def model(self, model_id: str, ctx: Ctx) -> Reply:
        return Reply(200, self.model_object(model_id))


class GroqDialect(OpenAIDialect):
    """api.groq.com/openai/v1."""

    provider = "groq"
    default_model = "llama-3.1-8b-instant"
    default_embedding_model = "nomic-embed-text-v1_5"
    model_ids = ("llama-3.1-8b-instant", "llama-3.3-70b-versatile", "openai/gpt-oss-20b")

    def error(
        self,
        status: int,
        message: str,
        type_: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        error: dict[str, Any] = {"message": message, "type": type_}
        if param is not None:
            error["param"] = param
        if code is not None:
            error["code"] = code
        return Reply(status, {"error": error}, headers or {})

    def missing_key(self, ctx: Ctx) -> Reply:
        return self.error(401, "Invalid API Key", "invalid_request_error", code="invalid_api_key")

    def invalid_key(self, secret: str, ctx: Ctx) -> Reply:
        return self.missing_key(ctx)

    def bad_json(self, ctx: Ctx) -> Reply:
        return self.error(
            400,
            "We could not parse the JSON body of your request. The API expects a JSON payload, "
            "but what was sent was not valid JSON.",
            "invalid_request_error",
        )

    def rate_message(self, verdict: Verdict, model: str, wait: str) -> str:
        window = {
            "rpm": "requests per minute (RPM)",
            "tpm": "tokens per minute (TPM)",
            "rpd": "requests per day (RPD)",
        }[verdict.dimension]
        where = f"model `{model}` in organization `org_emulator` service tier `on_demand`"
        if verdict.too_large:
            return (
                f"Request too large for {where} on {window}: Limit {verdict.limit}, Requested "
                f"{verdict.requested}, please reduce your message size and try again. Need more "
                "tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing"
            )
        return (
            f"Rate limit reached for {where} on {window}: Limit {verdict.limit}, Used "
            f"{verdict.used}, Requested {verdict.requested}. Please try again in {wait}. Need "
            "more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing"
        )

    def rate_limited(self, verdict: Verdict, ctx: Ctx) -> Reply:
        reply = super().rate_limited(verdict, ctx)
        if verdict.too_large:
            reply.status = 413
        return reply

    def quota_spent(self, rpd: int | None, day_reset_in: float, ctx: Ctx) -> Reply:
        limit = rpd or 14400
        verdict = Verdict("rpd", limit, limit, 1, day_reset_in)
        reply = self.rate_limited(verdict, ctx)
        # the daily budget is gone whatever rpd says: say so in the per-day request headers
        reply.headers.update(
            {
                "x-ratelimit-limit-requests": str(limit),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": go_duration(day_reset_in),
            }
        )
        return reply

    def server_error(self, ctx: Ctx) -> Reply:
        return self.error(
            500, "Internal Server Error. Please try again later.", "internal_server_error"
        )

    def overloaded(self, ctx: Ctx) -> Reply:
        return self.error(
            498,
            f"`flex` tier capacity exceeded for model `{ctx.model or self.default_model}`. "
            "Please try again later or use the `on_demand` service tier.",
            "capacity_exceeded",
            code="capacity_exceeded",
        )

    def stream_error_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": "Internal Server Error. Please try again later.",
                "type": "internal_server_error",
            }
        }

    def rate_headers(self, snap: Snapshot, wall: float) -> dict[str, str]:
        out: dict[str, str] = {}
        _headers("x-ratelimit-", snap.rpd, "requests", out)
        _headers("x-ratelimit-", snap.tpm, "tokens", out)
        return out

    def usage(self, plan: ChatPlan) -> dict[str, Any]:
        usage = super().usage(plan)
        prompt_time = round(0.0001 * plan.prompt_tokens, 6)
        completion_time = round(0.001 * plan.completion_tokens, 6)
        usage.update(
            queue_time=0.0001,
            prompt_time=prompt_time,
            completion_time=completion_time,
            total_time=round(prompt_time + completion_time, 6),
        )
        return usage

    def envelope(self, plan: ChatPlan, ctx: Ctx, obj: str) -> dict[str, Any]:
        body = super().envelope(plan, ctx, obj)
        if obj == "chat.completion":
            body["x_groq"] = {"id": ctx.request_id}
        return body

    def chunk(
        self,
        plan: ChatPlan,
        ctx: Ctx,
        delta: dict[str, Any],
        finish: str | None = None,
        *,
        first: bool = False,
    ) -> dict[str, Any]:
        body = super().chunk(plan, ctx, delta, finish, first=first)
        if first:
            body["x_groq"] = {"id": ctx.request_id}
        return body

    def final_chunk(self, plan: ChatPlan, ctx: Ctx) -> dict[str, Any]:
        body = super().final_chunk(plan, ctx)
        body["x_groq"] = {"id": ctx.request_id, "usage": self.usage(plan)}
        return body

    def model_object(self, model_id: str) -> dict[str, Any]:
        return {
            "id": model_id,
            "object": "model",
            "created": 1693721698,
            "owned_by": "Meta" if model_id.startswith("llama") else "emulator",
            "active": True,
            "context_window": 131072,
            "public_apps": None,
            "max_completion_tokens": 131072,
        }
