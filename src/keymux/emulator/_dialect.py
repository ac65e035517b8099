"""The interface each imitated provider implements, and the small data it trades with the app.

A dialect is stateless: it reads a request's key and body into a plan, and turns plans, limits
and faults into ``Reply`` data (status, JSON body, headers) or ``StreamPlan`` bytes. The app
(``_app.py``) owns keys, limits, faults, timing, stats and the HTTP side.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._content import BadRequest, ChatPlan, EmbedPlan
from ._limits import Snapshot, Verdict

__all__ = ["Ctx", "Dialect", "Reply", "StreamPlan", "dumps", "sse_data", "sse_event"]


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sse_data(obj: Any) -> bytes:
    """One data-only server-sent event."""
    return b"data: " + dumps(obj) + b"\n\n"


def sse_event(name: str, obj: Any) -> bytes:
    """One named server-sent event."""
    return b"event: " + name.encode() + b"\ndata: " + dumps(obj) + b"\n\n"


class Ctx:
    """Per-request facts: id, arrival time, the model and its limit scope once known."""

    __slots__ = ("model", "now", "request_id", "scope", "seq", "wall")

    def __init__(self, seq: int, now: float, wall: float) -> None:
        self.seq = seq
        self.request_id = f"req_emu{seq:025d}"
        self.now = now
        self.wall = wall
        self.model = ""
        self.scope = ""


@dataclass(slots=True)
class Reply:
    """A complete (non-stream) answer: a JSON-able body, or raw bytes."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StreamPlan:
    """A stream as pre-built frames. Content frames are what fault counters count."""

    head: list[bytes]
    content: list[bytes]
    tail: list[bytes]
    error: bytes
    content_type: str = "text/event-stream"


class Dialect(ABC):
    """One provider's wire protocol. Subclasses fill in the bodies; the flow lives in the app."""

    #: the provider name keys are registered under
    provider: str = ""
    #: the response header that carries the request id (None: only in the body)
    request_id_header: str | None = "x-request-id"
    #: the model used when a request names none
    default_model: str = ""
    default_embedding_model: str = ""

    # --- limits ---------------------------------------------------------------------------

    def model_scope(self, model: str) -> str:
        """The name of the budget a model's requests count against: the model itself, unless
        the provider limits a family together (Anthropic: a dated id counts as its class)."""
        return model

    # --- authentication -------------------------------------------------------------------

    @abstractmethod
    def credential(self, request: web.Request) -> str | None:
        """The key the request presents, or None when the expected auth is missing."""

    @abstractmethod
    def missing_key(self, ctx: Ctx) -> Reply:
        """The answer to a request without (the right kind of) key."""

    @abstractmethod
    def invalid_key(self, secret: str, ctx: Ctx) -> Reply:
        """The answer to an unknown or revoked key (shows at most a masked form)."""

    def precheck(self, request: web.Request, ctx: Ctx) -> Reply | None:
        """A header-level refusal after authentication (Anthropic: anthropic-version)."""
        return None

    # --- request parsing ------------------------------------------------------------------

    @abstractmethod
    def bad_json(self, ctx: Ctx) -> Reply:
        """The answer to a body that is not a JSON object."""

    @abstractmethod
    def bad_request(self, exc: BadRequest, ctx: Ctx) -> Reply:
        """The answer to a request that fails validation."""

    @abstractmethod
    def parse_chat(self, body: dict[str, Any], request: web.Request) -> ChatPlan:
        """The chat plan for a body, or BadRequest."""

    def parse_embed(self, body: dict[str, Any], request: web.Request) -> EmbedPlan:
        """The embeddings plan for a body, or BadRequest."""
        raise BadRequest("This provider has no embeddings endpoint.", status=404)

    # --- refusals and faults --------------------------------------------------------------

    @abstractmethod
    def rate_limited(self, verdict: Verdict, ctx: Ctx) -> Reply:
        """The answer to a request over one of the key's limits."""

    @abstractmethod
    def quota_spent(self, rpd: int | None, day_reset_in: float, ctx: Ctx) -> Reply:
        """The billing / daily-quota refusal (``rpd``: the model's daily limit, if any)."""

    @abstractmethod
    def server_error(self, ctx: Ctx) -> Reply:
        """The provider's 500."""

    @abstractmethod
    def overloaded(self, ctx: Ctx) -> Reply:
        """The provider's overload answer (503 / 529 / 498)."""

    def malformed(self, ctx: Ctx) -> Reply:
        """A 200 whose body is not valid JSON."""
        return Reply(200, b'{"id":"' + ctx.request_id.encode() + b'","choices":[{"message":{"con')

    # --- headers --------------------------------------------------------------------------

    def rate_headers(self, snap: Snapshot, wall: float) -> dict[str, str]:
        """The rate-limit headers every answer of a limited key carries."""
        return {}

    # --- answers --------------------------------------------------------------------------

    @abstractmethod
    def chat(self, plan: ChatPlan, ctx: Ctx) -> Reply:
        """The 200 chat answer."""

    @abstractmethod
    def chat_stub(self, plan: ChatPlan, ctx: Ctx) -> Reply:
        """A 200 chat answer that is valid JSON but lacks the content fields."""

    @abstractmethod
    def stream(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        """The chat answer as a stream."""

    @abstractmethod
    def stream_stub(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        """A stream whose events are valid JSON but lack the content fields."""

    @abstractmethod
    def stream_malformed(self, plan: ChatPlan, ctx: Ctx) -> StreamPlan:
        """A stream with an event whose data is not valid JSON."""

    def embed(self, plan: EmbedPlan, vectors: list[list[float]], ctx: Ctx) -> Reply:
        """The 200 embeddings answer."""
        raise NotImplementedError

    def embed_stub(self, plan: EmbedPlan, ctx: Ctx) -> Reply:
        """A 200 embeddings answer lacking the vectors."""
        raise NotImplementedError

    def count_tokens(self, body: dict[str, Any], request: web.Request, ctx: Ctx) -> Reply:
        """The 200 answer of a token-counting request (Anthropic's ``count_tokens``, Gemini's
        ``countTokens``): the prompt's tokens, nothing generated, no rate limit spent."""
        raise NotImplementedError

    @abstractmethod
    def models(self, ctx: Ctx) -> Reply:
        """The model list."""

    @abstractmethod
    def model(self, model_id: str, ctx: Ctx) -> Reply:
        """One model."""
