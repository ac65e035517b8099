"""Names in the shared store: which key and which budget a fact belongs to, never a secret.

* A key is ``provider:fingerprint`` (16 hex characters of the SHA-256 of its secret), the
  same in every process that holds the same secret, whatever name each gives it.
* A budget is its key's ident, or for a group ``provider:g:group`` (a group name that is not
  plain letters, digits, ``_.-`` up to 48 characters is replaced by its own fingerprint).

Redis key names put that ident in a hash tag, ``{...}``, so everything one script touches
lands in one Redis Cluster slot; ``P`` is the URL's prefix:

    P:{ident}:st        the key's status (disabled, reason, error; cool, park)
    P:{ident}:n         the key's counters, summed over every process
    P:{tag}:rq:SCOPE    a budget's request sends   \\
    P:{tag}:tk:SCOPE    its token sends             |  per model scope, one slot per tag
    P:{tag}:tt:SCOPE    their total                 |
    P:{tag}:lm:SCOPE    learned limits, schedules  /
    P:procs             processes alive (heartbeats)
    P:events            the channel status changes are pushed on
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "budget_keys",
    "channel",
    "counts_key",
    "group_tag",
    "key_ident",
    "procs_key",
    "status_key",
]

_PLAIN = re.compile(r"^[A-Za-z0-9_.-]{1,48}$")


def key_ident(provider: str, fingerprint: str) -> str:
    return f"{provider}:{fingerprint}"


def group_tag(provider: str, group: str) -> str:
    name = group if _PLAIN.match(group) else hashlib.sha256(group.encode()).hexdigest()[:16]
    return f"{provider}:g:{name}"


def budget_keys(prefix: str, tag: str, scope: str) -> tuple[str, str, str, str]:
    """The request log, token log, token total and limits hash of one budget's scope."""
    base = f"{prefix}:{{{tag}}}"
    return (f"{base}:rq:{scope}", f"{base}:tk:{scope}", f"{base}:tt:{scope}", f"{base}:lm:{scope}")


def status_key(prefix: str, ident: str) -> str:
    return f"{prefix}:{{{ident}}}:st"


def counts_key(prefix: str, ident: str) -> str:
    return f"{prefix}:{{{ident}}}:n"


def procs_key(prefix: str) -> str:
    return f"{prefix}:procs"


def channel(prefix: str) -> str:
    return f"{prefix}:events"
