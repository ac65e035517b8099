"""Requests that keymux passes through rather than builds: an official SDK's (through the
drop-in HTTP clients) or any caller's (through ``keymux serve``).

``prepare_forward`` turns one inbound HTTP request into the ``Prepared`` data the attempt loop
sends: its path relative to the provider's official base URL (so each attempt can join it to
its key's ``base_url``), its headers without the caller's credential (its *slot* remembered, so
the lane's key goes where the caller put its placeholder) and without hop-by-hop headers, its
body kept as bytes (replayable for retries), and the model it asks for (budgets and limits are
kept per model). ``answer_headers`` cleans an upstream answer's headers for the caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from ._types import Prepared
from .providers import ADAPTERS

__all__ = [
    "CREDENTIAL_HEADERS",
    "answer_headers",
    "credential_of",
    "prepare_forward",
    "relative_path",
]

#: where callers put an API key (or a proxy token), in the order they are looked at
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")

#: never passed on: connection-level (RFC 9110 §7.6.1), set by keymux's own engine, or
#: credentials; accept-encoding too: the engine negotiates and decodes compression itself
_DROP_REQUEST = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "accept-encoding",
        "expect",
        *CREDENTIAL_HEADERS,
    }
)
#: not passed back: connection-level, or describing the body as it was on the wire (the engine
#: has already decoded any compression, and the caller's library frames the body itself)
_DROP_ANSWER = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)

#: ``models/{model}:method`` in a Gemini path
_GEMINI_MODEL = re.compile(r"/models/([^/:]+)(?::|$)")


def credential_of(headers: Mapping[str, str], query: str = "") -> str | None:
    """The API key (or proxy token) a request presents, wherever its SDK put it: ``Authorization:
    Bearer``, ``x-api-key``, ``x-goog-api-key``, or a ``key=`` query parameter."""
    lower = {k.lower(): v for k, v in headers.items() if k.lower() in CREDENTIAL_HEADERS}
    auth = lower.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else auth.strip()
    for name in ("x-api-key", "x-goog-api-key"):
        if name in lower:
            return lower[name].strip()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "key":
            return value
    return None


def _slot(provider: str, headers: Mapping[str, str]) -> tuple[str, str]:
    """The header the lane's key goes into: where the caller put its own, else the provider's
    usual place. A ``key=`` query parameter moves to the provider's header (keys stay out of
    URLs)."""
    adapter = ADAPTERS[provider]
    present = {k.lower() for k in headers}
    if "authorization" in present:
        return "Authorization", "Bearer "
    if "x-api-key" in present:
        return "x-api-key", ""
    if "x-goog-api-key" in present:
        return "x-goog-api-key", ""
    return adapter.auth_header, adapter.auth_prefix


def relative_path(provider: str, path: str) -> str:
    """``path`` (as the caller sent it) relative to the provider's official base URL: OpenAI's
    base URL ends in ``/v1``, so ``/v1/chat/completions`` becomes ``/chat/completions``; the
    other providers' base URLs have no path."""
    root = urlsplit(ADAPTERS[provider].default_base_url).path.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return path if path.startswith("/") else "/" + path


def _model_of(provider: str, path: str, body: bytes | None) -> str | None:
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            return str(data["model"])
    match = _GEMINI_MODEL.search(unquote(path))
    return match.group(1) if match else None


def prepare_forward(
    provider: str,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | None,
) -> Prepared:
    """One inbound request as the attempt loop sends it. ``path`` and ``query`` as the caller
    sent them (``query`` without the ``?``); the caller's credential is dropped."""
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    kept: dict[str, str] = {}
    for name, value in pairs:
        if name.lower() not in _DROP_REQUEST:
            kept[name] = value
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "key"]
    rel = relative_path(provider, path)
    if params:
        rel += "?" + urlencode(params)
    header, prefix = _slot(provider, dict(pairs))
    return Prepared(
        method=method.upper(),
        path=rel,
        headers=kept,
        body=body or None,
        model=_model_of(provider, path, body),
        auth_header=header,
        auth_prefix=prefix,
    )


def answer_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """An upstream answer's headers as the caller should get them (repeats kept)."""
    items = headers.items()
    return [(k, v) for k, v in items if k.lower() not in _DROP_ANSWER]
