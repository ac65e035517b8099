"""Anthropic (``/v1/messages``, ``/v1/models`` with ``anthropic-version`` or ``x-api-key``).

The key comes in ``x-api-key`` (what the 0.x SDKs send) or ``Authorization: Bearer`` (what the
2.x SDKs send); ``anthropic-version`` must be one the API knows (``2023-06-01``, sent by 0.x,
``2026-10-21``, sent by 2.x), and ``max_tokens`` is required. Limits are per model class: a
dated id (``claude-sonnet-4-5-20250929``) counts against its class (``claude-sonnet-4-5``).
Rate-limit resets are absolute RFC 3339 timestamps with milliseconds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ._content import BadRequest, ChatPlan, plan_reply, prompt_tokens, text_of
from ._dialect import Ctx, Dialect, Reply, StreamPlan, sse_event
from ._limits import Snapshot, Usage, Verdict, retry_after, rfc3339_ms

__all__ = ["ClaudeDialect"]

_OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
_MODELS = (
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
)
_WINDOW_TEXT = {"rpm": "requests per minute", "tpm": "tokens per minute", "rpd": "requests per day"}
#: the ``anthropic-version`` values the API accepts
VERSIONS = frozenset({"2023-01-01", "2023-06-01", "2026-10-21"})
#: a model id's date or ``-latest`` suffix: what the model class leaves out
_SNAPSHOT = re.compile(r"-(?:\d{8}|latest)$")


def _headers(kind: str, usage: Usage | None, wall: float, out: dict[str, str]) -> None:
    if usage is None:
        return
    prefix = f"anthropic-ratelimit-{kind}-"
    out[prefix + "limit"] = str(usage.limit)
    out[prefix + "remaining"] = str(usage.remaining)
    out[prefix + "reset"] = rfc3339_ms(wall + usage.reset_in)


class ClaudeDialect(Dialect):
    """api.anthropic.com."""

    provider = "claude"
    request_id_header = "request-id"
    default_model = "claude-sonnet-4-5"

    def model_scope(self, model: str) -> str:
        """``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5`` (limits are per class)."""
        return _SNAPSHOT.sub("", model)

    def credential(self, request: web.Request) -> str | None:
        key = request.headers.get("x-api-key", "").strip()
        if key:
            return key
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip() or None
        return None

    def error(
        self, status: int, type_: str, message: str, ctx: Ctx, headers: dict[str, str] | None = None
    ) -> Reply:
        body = {
            "type": "error",
            "error": {"type": type_, "message": message},
            "request_id": ctx.request_id,
        }
        return Reply(status, body, headers or {})

    def missing_key(self, ctx: Ctx) -> Reply:
        return self.error(401, "authentication_error", "x-api-key header is required", ctx)

    def invalid_key(self, secret: str, ctx: Ctx) -> Reply:
        return self.error(401, "authentication_error", "invalid x-api-key", ctx)

    def precheck(self, request: web.Request, ctx: Ctx) -> Reply | None:
        version = request.headers.get("anthropic-version", "").strip()
        if not version:
            return self.error(
                400, "invalid_request_error", "anthropic-version: header is required", ctx
            )
        if version not in VERSIONS:
            return self.error(
                400,
                "invalid_request_error",
                f"anthropic-version: {version!r} is not a valid version",
                ctx,
            )
        return None

    def bad_json(self, ctx: Ctx) -> Reply:
        return self.error(
            400,
            "invalid_request_error",
            "There was an error parsing the body of your request. Please check that it is "
            "valid JSON.",
            ctx,
        )

    def bad_request(self, exc: BadRequest, ctx: Ctx) -> Reply:
        type_ = "not_found_error" if exc.status == 404 else "invalid_request_error"
        return self.error(exc.status, type_, exc.message, ctx)

    def parse_chat(self, body: dict[str, Any], request: web.Request) -> ChatPlan:
        messages = body.get("messages")
        if messages is None:
            raise BadRequest("messages: Field required")
        if not isinstance(messages, list):
            raise BadRequest("messages: Input should be a valid list")
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: Field required")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise BadRequest("max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise BadRequest("max_tokens: Input should be greater than or equal to 1")
        system = body.get("system")
        texts = [text_of(system)] if system else []
        last_user = ""
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                raise BadRequest(
                    f"messages.{index}: each message needs a role of 'user' or 'assistant'"
                )
            text = text_of(message.get("content"))
            texts.append(text)
            if message["role"] == "user":
                last_user = text
        model = body.get("model") or self.default_model
        if not isinstance(model, str):
            raise BadRequest("model: Input should be a valid string")
        chunks, truncated = plan_reply(self.provider, last_user, max_tokens)
        return ChatPlan(
            model=model,
            prompt_tokens=prompt_tokens(texts),
            chunks=chunks,
            truncated=truncated,
            stream=body.get("stream") is True,
        )

    def count_tokens(self, body: dict[str, Any], request: web.Request, ctx: Ctx) -> Reply:
        # the Messages body without max_tokens (count_tokens takes none)
        plan = self.parse_chat({**body, "max_tokens": 1, "stream": False}, request)
        return Reply(200, {"input_tokens": plan.prompt_tokens})

    def rate_limited(self, verdict: Verdict, ctx: Ctx) -> Reply:
        what = _WINDOW_TEXT[verdict.dimension]
        if verdict.too_large:
            message = (
                f"This request would exceed the rate limit for your organization (org-emulator) "
                f"of {verdict.limit:,} {what}: it alone needs {verdict.requested:,} tokens. "
                "Please reduce the prompt length or the maximum tokens requested."
            )
        else:
            message = (
                f"This request would exceed the rate limit for your organization (org-emulator) "
                f"of {verdict.limit:,} {what}. For details, refer to: "
                "https://docs.claude.com/en/api/rate-limits. You can see the response headers "
                "for current usage. Please reduce the prompt length or the maximum tokens "
                "requested, or try again later."
            )
        return self.error(
            429, "rate_limit_error", message, ctx, {"retry-after": retry_after(verdict.reset_in)}
        )

    def quota_spent(self, rpd: int | None, day_reset_in: float, ctx: Ctx) -> Reply:
        today = datetime.fromtimestamp(ctx.wall, tz=UTC)
        year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
        reply = self.error(
            429,
            "rate_limit_error",
            "You have reached your API usage limits: your organization's monthly spend limit "
            f"is used up. You will regain access on {year:04d}-{month:02d}-01 at 00:00 UTC.",
            ctx,
        )
        reply.body["error"]["details"] = {"error_code": "enforced_spend_limit_reached"}
        return reply

    def server_error(self, ctx: Ctx) -> Reply:
        return self.error(500, "api_error", "Internal server error", ctx)

    def overloaded(self, ctx: Ctx) -> Reply:
        return self.error(529, "overloaded_error", "Overloaded", ctx)

    def rate_headers(self, snap: Snapshot, wall: float) -> dict[str, str]:
        out: dict[str, str] = {}
        _headers("requests", snap.rpm, wall, out)
        # one combined limit: it also bounds input and output tokens separately
        for kind in ("tokens", "input-tokens", "output-tokens"):
            _headers(kind, snap.tpm, wall, out)
        return out

    def message(self, plan: ChatPlan, ctx: Ctx, *, streaming: bool = False) -> dict[str, Any]:
        done = not streaming
        stop = ("max_tokens" if plan.truncated else "end_turn") if done else None
        return {
            "id": f"msg_emu{ctx.seq:020d}",
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [{"type": "text", "text": plan.text}] if done else [],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": plan.prompt_tokens,
                "output_tokens": plan.completion_tokens if done else 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def chat(self, plan: ChatPlan, ctx: Ctx) -> Reply:
        return Reply(200, self.message(plan, ctx))

    def chat_stub(self, plan: ChatPlan, ctx: Ctx) -> Reply:
        body = self.message(plan, ctx)
        del body["content"]
        return Reply(200, body)

    def stream(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        head = [
            sse_event(
                "message_start",
                {"type": "message_start", "message": self.message(plan, ctx, streaming=True)},
            ),
            sse_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse_event("ping", {"type": "ping"}),
        ]
        content = [
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
            for text in plan.chunks
        ]
        tail = [
            sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": "max_tokens" if plan.truncated else "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": plan.completion_tokens},
                },
            ),
            sse_event("message_stop", {"type": "message_stop"}),
        ]
        return StreamPlan(head, content, tail, sse_event("error", _OVERLOADED))

    def stream_stub(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        stub = sse_event("content_block_delta", {"type": "content_block_delta", "index": 0})
        return StreamPlan(
            [],
            [stub],
            [sse_event("message_stop", {"type": "message_stop"})],
            sse_event("error", _OVERLOADED),
        )

    def stream_malformed(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        broken = b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg\n\n'
        return StreamPlan(
            [],
            [broken],
            [sse_event("message_stop", {"type": "message_stop"})],
            sse_event("error", _OVERLOADED),
        )

    def model_object(self, model_id: str) -> dict[str, Any]:
        for known, name, created in _MODELS:
            if known == model_id:
                return {"type": "model", "id": known, "display_name": name, "created_at": created}
        return {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": "2025-01-01T00:00:00Z",
        }

    def models(self, ctx: Ctx) -> Reply:
        data = [self.model_object(model_id) for model_id, _, _ in _MODELS]
        return Reply(
            200,
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]},
        )

    def model(self, model_id: str, ctx: Ctx) -> Reply:
        return Reply(200, self.model_object(model_id))
