"""Deterministic answers: what the emulator says, how many tokens it charges, its embeddings.

Prompt tokens are ``3 + sum(4 + ceil(chars / 4))`` over the messages (the system prompt counts
as one). The reply is ``"Hello from the keymux emulator (<provider>)."`` followed, when the last
user message has text, by ``" You said: <that text>"``; it is cut to the request's max tokens
(default ``DEFAULT_MAX_WORDS``) counting one token per word, and streamed one word per chunk.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_WORDS",
    "BadRequest",
    "ChatPlan",
    "EmbedPlan",
    "embedding",
    "embedding_b64",
    "plan_reply",
    "prompt_tokens",
    "text_of",
    "text_tokens",
]

DEFAULT_MAX_WORDS = 128
MAX_DIMENSIONS = 4096


class BadRequest(Exception):
    """A request the provider would refuse (400 unless ``status`` says otherwise)."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


@dataclass(slots=True)
class ChatPlan:
    """Everything about one chat answer, decided at arrival."""

    model: str
    prompt_tokens: int
    chunks: list[str]
    truncated: bool
    stream: bool = False
    include_usage: bool = False
    sse: bool = True

    @property
    def completion_tokens(self) -> int:
        return len(self.chunks)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + len(self.chunks)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@dataclass(slots=True)
class EmbedPlan:
    """Everything about one embeddings answer, decided at arrival."""

    model: str
    texts: list[str]
    tokens: int
    dimensions: int = 8
    base64: bool = False
    batch: bool = False


def text_of(content: object) -> str:
    """The text inside a message's content: a string, a list of parts, or a part/Content dict."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(filter(None, (text_of(item) for item in content)))
    if isinstance(content, dict):
        text = content.get("text")
        if isinstance(text, str):
            return text
        parts = content.get("parts")
        if parts is not None:
            return text_of(parts)
        inner = content.get("content")
        if inner is not None:
            return text_of(inner)
    return ""


def text_tokens(text: str) -> int:
    """``ceil(chars / 4)``, at least 1."""
    return max(1, math.ceil(len(text) / 4))


def prompt_tokens(texts: Iterable[str]) -> int:
    """3 + (4 + ceil(chars / 4)) per message."""
    return 3 + sum(4 + math.ceil(len(text) / 4) for text in texts)


def plan_reply(provider: str, last_user: str, max_words: int | None) -> tuple[list[str], bool]:
    """The reply as stream chunks (one word each, spaces kept) and whether it was cut."""
    text = f"Hello from the keymux emulator ({provider})."
    said = " ".join(last_user.split())
    if said:
        text = f"{text} You said: {said}"
    words = text.split(" ")
    cap = DEFAULT_MAX_WORDS if max_words is None else max_words
    truncated = len(words) > cap
    if truncated:
        words = words[:cap]
    chunks = [word + " " for word in words]
    if chunks:
        chunks[-1] = words[-1]
    return chunks, truncated


def check_dimensions(value: object, name: str) -> int:
    """A requested embedding size, or BadRequest."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSIONS:
        raise BadRequest(
            f"Invalid '{name}': expected an integer between 1 and {MAX_DIMENSIONS}.", param=name
        )
    return value


def embedding(text: str, dimensions: int = 8) -> list[float]:
    """A unit vector derived from a hash of the text: equal texts, equal vectors."""
    raw = b""
    counter = 0
    seed = text.encode("utf-8", "surrogatepass")
    while len(raw) < 2 * dimensions:
        raw += hashlib.sha256(counter.to_bytes(4, "little") + seed).digest()
        counter += 1
    values = [
        int.from_bytes(raw[2 * i : 2 * i + 2], "little") / 32767.5 - 1.0 for i in range(dimensions)
    ]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 7) for v in values]


def embedding_b64(vector: list[float]) -> str:
    """Base64 of little-endian float32s, as OpenAI sends with ``encoding_format: base64``."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
