"""The asyncio core: one attempt loop, three readers of its answers, probes, shutdown.

The attempt loop (``Core._open``) takes a lane from the dispatcher, sends the request's
``Prepared`` data with the lane's key, learns from the answer's headers, and retries whatever
is not a 2xx answer (classify -> decide -> cool, park or disable the key -> release) until a 2xx
answer is open or the request fails for good. Three readers take it from there:

* ``call``: the whole body, parsed by the provider's adapter into a ``Response``;
* ``stream``: server-sent events decoded into text deltas, then the final ``Response``;
* ``forward``: the answer passed through as it is (an official SDK's request, the proxy's),
  usage counted from the JSON body or the stream's events.

A failure found while reading a 2xx body (a cut stream, an error event, garbage) goes back
through the same decision as long as nothing reached the caller. Which lane a request gets,
and when, is the ``Dispatcher``'s business (``_dispatch.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._clock import Clock
from ._config import MuxConfig, Timeout
from ._dispatch import Dispatcher
from ._errors import (
    AuthenticationError,
    ClosedError,
    ConnectionError,
    KeymuxError,
    MalformedResponseError,
    NoKeyAvailableError,
    QuotaExhaustedError,
    RequestTimeoutError,
    StreamError,
)
from ._http import Engine, Exchange, TransportFailure
from ._lane import Lane, Request
from ._retry import LaneAction, decide, error_class
from ._types import Kind, Outcome, Parsed, Response, Usage
from .providers import SSEParser, StreamDecoder, StreamFailure

if TYPE_CHECKING:
    from .state import Shared

__all__ = ["Core", "Head", "Telemetry"]

log = logging.getLogger("keymux")

#: failures that make a key cool longer each time they repeat
_KEY_FAILURES = frozenset({Kind.SERVER_ERROR, Kind.TRANSPORT})

#: first and longest wait before a key disabled for billing is probed again
QUOTA_PROBE_FIRST = 300.0
QUOTA_PROBE_MAX = 6 * 3600.0
_PROBE_TIMEOUT = Timeout(total=10.0, connect=5.0)

_NO_DEADLINE = contextlib.nullcontext()
#: the most a forwarded stream's opening bytes are held back for, waiting for its first text
_HOLD_BYTES = 64 * 1024


class Telemetry(Protocol):
    """Who wants to hear about every attempt (the proxy's /metrics). Called on the core's
    loop; must not block."""

    def waited(self, lane: Lane, seconds: float) -> None:
        """A request got ``lane`` after waiting ``seconds`` (0 when a key was free at once)."""

    def attempted(self, lane: Lane, outcome: str, status: int, seconds: float) -> None:
        """An attempt on ``lane`` ended: ``outcome`` is "ok" or the failure's kind
        ("rate_limited", "server_error", "transport", ...), ``status`` the HTTP status (0 for
        none), ``seconds`` from sending to the end of the answer."""


class _Call:
    """One request's way through the attempt loop."""

    __slots__ = ("answer", "attempts", "last", "req", "retries", "sent_at", "started")

    def __init__(self, req: Request, started: float) -> None:
        self.req = req
        self.started = started
        self.attempts = 0
        self.retries = 0  # counted retries (a key taken out of the pool does not count)
        self.sent_at = started  # when the current attempt went out
        #: the lane and verdict of the last failed attempt
        self.last: tuple[Lane, Outcome] | None = None
        #: the last error answer a provider gave: (lane, status, headers, body)
        self.answer: tuple[Lane, int, Mapping[str, str], bytes] | None = None


class _Deadline:
    """Cancel the current task at clock time ``at``; turn that into RequestTimeoutError."""

    __slots__ = ("_call", "_clock", "_handle", "_task", "_what", "expired")

    def __init__(self, clock: Clock, call: _Call, what: str) -> None:
        self._clock = clock
        self._call = call
        self._what = what
        self._handle: Any = None
        self._task: asyncio.Task[Any] | None = None
        self.expired = False

    def _error(self) -> RequestTimeoutError:
        req = self._call.req
        key = req.lane_name or req.pin
        on = f" (key {key!r})" if key else ""
        cause = ""
        if self._call.last is not None:
            lane, outcome = self._call.last
            cause = (
                f"; the last attempt (key {lane.name!r}) failed: "
                f"{lane.secret.scrub(outcome.message)}"
            )
        return RequestTimeoutError(
            f"{self._what}{on}: the deadline passed after {self._call.attempts} "
            f"attempt{'' if self._call.attempts == 1 else 's'}{cause}",
            provider=req.provider,
            key_name=key,
            attempts=self._call.attempts,
        )

    def __enter__(self) -> _Deadline:
        at = self._call.req.deadline_at
        assert at is not None
        if self._clock.now() >= at:
            raise self._error()
        self._task = asyncio.current_task()
        self._handle = self._clock.call_at(at, self._fire)
        return self

    def _fire(self) -> None:
        if self._task is not None and not self._task.done():
            self.expired = True
            self._task.cancel()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self.expired and et is not None and issubclass(et, asyncio.CancelledError):
            assert self._task is not None
            if self._task.uncancel() == 0:
                raise self._error() from ev


class Head:
    """The status line of a forwarded answer: what the caller's HTTP library turns into its
    response, before the body."""

    __slots__ = ("attempts", "error", "headers", "key_name", "status")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        key_name: str,
        attempts: int,
        error: KeymuxError | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.key_name = key_name
        self.attempts = attempts
        #: set when keymux gave up and this is the provider's last error answer
        self.error = error

    def __repr__(self) -> str:
        return f"Head({self.status}, key_name={self.key_name!r}, attempts={self.attempts})"


class Core:
    """Owns the dispatcher, the engine and every request in flight."""

    def __init__(
        self,
        config: MuxConfig,
        *,
        clock: Clock,
        rng: random.Random,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = rng
        self.engine = engine or Engine()
        self.dispatch = Dispatcher(config, clock=clock)
        self._running: set[asyncio.Task[Any]] = set()
        self._closing_tasks: set[asyncio.Task[Any]] = set()
        self._probe_handles: set[Any] = set()
        #: told of every attempt when set (None: nothing is measured)
        self.telemetry: Telemetry | None = None
        #: the state every process shares (None: memory://, this process's lanes are all)
        self.shared: Shared | None = None
        #: providers some budget of which has a token window (from headers or a 429): their
        #: requests carry token estimates from then on (the gateway reads it)
        self.token_windows: set[str] = set()

    @property
    def closed(self) -> bool:
        return self.dispatch.closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self.dispatch.closed = value

    # -- keys -------------------------------------------------------------------------------

    def disable(
        self,
        lane: Lane,
        reason: str,
        *,
        error: type[KeymuxError] = AuthenticationError,
        probe_after: float | None = None,
    ) -> None:
        """Take a key out of the pool; ``error`` is what requests pinned to it fail with."""
        if not lane.enabled:
            return
        log.warning("keymux: %s key %r disabled: %s", lane.provider, lane.name, reason)
        self.dispatch.take_out(lane, reason, error)
        lane.disabled_reason = reason
        lane.disabled_at = self.clock.wall()
        if self.shared is not None:
            self.shared.disabled(lane, reason, error)
        if probe_after is not None:
            self._schedule_probe(lane, probe_after)

    def _schedule_probe(self, lane: Lane, delay: float) -> None:
        lane.probe_at = self.clock.wall() + delay
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        handle: Any = None

        def fire() -> None:
            self._probe_handles.discard(handle)
            if lane.enabled or lane.removed or self.closed:
                return
            task = loop.create_task(self._probe(lane, delay))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

        handle = self.clock.call_at(self.clock.now() + delay, fire)
        self._probe_handles.add(handle)

    async def _probe(self, lane: Lane, last_delay: float) -> None:
        req = lane.adapter.probe(base_url=lane.base_url, api_key=lane.secret.reveal())
        try:
            status, _, _ = await self.engine.send(req, _PROBE_TIMEOUT)
        except TransportFailure:
            status = 0
        if 200 <= status < 300:
            self.dispatch.enable(lane)
            if self.shared is not None:
                self.shared.enabled(lane)
        elif not lane.removed and not self.closed:
            self._schedule_probe(lane, min(last_delay * 2, 3600.0))

    # -- the attempt loop -------------------------------------------------------------------

    async def _open(self, c: _Call) -> tuple[Lane, Exchange]:
        """Attempts until one gets a 2xx answer: its lane (slot held) and the open exchange.
        Raises the request's final KeymuxError."""
        req = c.req
        prepared = req.prepared
        dispatch = self.dispatch
        now = self.clock.now
        telemetry = self.telemetry
        shared = self.shared
        while True:
            asked = now() if telemetry is not None else 0.0
            try:
                got = dispatch.take(req)
                if isinstance(got, Lane):
                    lane = got
                else:  # a Waiter: the lane comes when one frees up
                    try:
                        lane = await got.future
                    except BaseException:
                        dispatch.abandon(got)
                        raise
                    if not dispatch.usable(lane, req):
                        continue
            except NoKeyAvailableError:
                if c.last is None:
                    raise
                # every key this request may use has failed it: the last answer says why
                # (the provider's message, and AuthenticationError/BadRequestError/...)
                raise self._error(c.last[0], c.last[1], c.attempts) from None
            if shared is not None:
                # the budget every process shares: one round trip; a "no" gave the lane back
                try:
                    sending = await shared.reserve(lane, req)
                except BaseException:
                    dispatch.release(lane, req)
                    raise
                if not sending:
                    continue
            c.attempts += 1
            if c.attempts > 1:
                lane.retries += 1
            adapter = lane.adapter
            c.sent_at = now()
            if telemetry is not None:
                telemetry.waited(lane, c.sent_at - asked)
            try:
                exchange = await self.engine.open(
                    prepared.for_key(
                        adapter.url(lane.base_url, prepared.path), lane.secret.reveal()
                    ),
                    req.timeout,
                )
            except TransportFailure as exc:
                outcome = exc.outcome()
            except BaseException:
                dispatch.release(lane, req)
                raise
            else:
                status = exchange.status
                self._observe(lane, exchange, c)
                if not lane.answered:
                    dispatch.answered(lane)
                if 200 <= status < 300:
                    return lane, exchange
                try:
                    body = await exchange.read()
                except TransportFailure:
                    body = b""
                except BaseException:
                    dispatch.release(lane, req)
                    raise
                finally:
                    exchange.close()
                lane.observe_latency(now() - c.sent_at)
                outcome = adapter.classify(status, exchange.headers, body, self.clock.wall())
                c.answer = (lane, status, exchange.headers, body)
            delay = self._failed(c, lane, outcome)
            if delay > 0:
                await self.clock.sleep(delay)

    def _observe(self, lane: Lane, exchange: Exchange, c: _Call) -> None:
        snapshot = lane.adapter.rate_snapshot(exchange.headers, self.clock.wall())
        req = c.req
        budget = req.budget or lane.book.get(req.scope)
        # every answer counts (the first one ends the budget's slow start), headers or not
        budget.observe(
            snapshot, self.clock.now(), req.reservation, c.sent_at, exchange.status == 429
        )
        if self.shared is not None:
            self.shared.observed(lane, req, budget, exchange.status)
        if snapshot is not None and snapshot.tokens is not None:
            # a token window: from now on this provider's requests carry token estimates
            self.token_windows.add(lane.provider)

    def _failed(self, c: _Call, lane: Lane, outcome: Outcome) -> float:
        """Apply the verdict on an attempt to its key, free the slot, and say how long the
        request waits before its next attempt; raises the final error when it has none."""
        self._tell(lane, c, outcome.kind.value, outcome.status)
        try:
            # the answer's effect on the key (cooldown, parking, disabling) lands before its
            # slot is freed, or the freed slot sends the next waiter straight into the key
            # that just refused
            retry, delay, counts = self._after_failure(lane, c.req, outcome, c.retries, c.attempts)
        finally:
            self.dispatch.release(lane, c.req)
        if not retry:
            raise self._error(lane, outcome, c.attempts)
        c.last = (lane, outcome)
        if counts:
            c.retries += 1
        return delay

    def _tell(self, lane: Lane, c: _Call, outcome: str, status: int) -> None:
        if self.telemetry is not None:
            self.telemetry.attempted(lane, outcome, status, self.clock.now() - c.sent_at)

    def _after_failure(
        self, lane: Lane, req: Request, outcome: Outcome, retries: int, attempts: int
    ) -> tuple[bool, float, bool]:
        """Apply the retry decision's effect on the lane. (retry, delay, counts)."""
        now = self.clock.now()
        budget = req.budget or lane.book.get(req.scope)
        if req.reservation is not None and outcome.kind is not Kind.TRANSPORT:
            budget.settle(req.reservation, 0)  # refused: no tokens were used
        retry_after = outcome.retry_after
        if outcome.kind is Kind.RATE_LIMITED:
            lane.rate_limited += 1
            precise = budget.exhausted_reset(now)
            if precise is not None:
                exact = precise - now
                retry_after = exact if retry_after is None else min(retry_after, exact + 0.001)
        else:
            lane.failures += 1
        decision = decide(
            outcome.kind,
            retries=retries,
            policy=self.config.retry,
            retry_after=retry_after,
            pinned=req.pin is not None,
            jitter=self.rng.random(),
            streak=budget.streak + 1
            if outcome.kind is Kind.RATE_LIMITED
            else lane.fail_streak + (outcome.kind in _KEY_FAILURES),
        )
        if outcome.kind in _KEY_FAILURES:
            lane.fail_streak += 1
        action = decision.lane_action
        # a rate limit or a spent daily quota is the model's (its budget cools or parks);
        # server errors and timeouts are the key's
        by_model = outcome.kind is Kind.RATE_LIMITED or outcome.kind is Kind.DAILY_LIMIT
        if action is LaneAction.COOL:
            if by_model:
                budget.on_rate_limited(
                    now,
                    decision.lane_delay,
                    req.reservation,
                    outcome.retry_after,
                    limit=outcome.limit,
                    dimension=outcome.dimension,
                    period=outcome.period,
                )
                if outcome.dimension == "tokens" and outcome.limit is not None:
                    self.token_windows.add(lane.provider)
            else:
                lane.cooldown_until = max(lane.cooldown_until, now + decision.lane_delay)
        elif action is LaneAction.PARK:
            if by_model:
                budget.park(now, decision.lane_delay)
            else:
                lane.parked_until = max(lane.parked_until, now + decision.lane_delay)
        elif action is LaneAction.DISABLE:
            if outcome.kind is Kind.KEY_INVALID:
                self.disable(lane, f"invalid key (HTTP {outcome.status})")
            else:
                # a models endpoint may answer while billing is still spent: each time the
                # key comes back and fails again, the next probe waits twice as long
                probe_after = min(QUOTA_PROBE_FIRST * 2**lane.quota_strikes, QUOTA_PROBE_MAX)
                lane.quota_strikes += 1
                self.disable(
                    lane,
                    f"quota or billing exhausted (HTTP {outcome.status})",
                    error=QuotaExhaustedError,
                    probe_after=probe_after,
                )
        shared = self.shared
        if shared is not None:
            shared.failed(lane, req, budget, outcome.kind is Kind.TRANSPORT)
            if action is LaneAction.COOL or action is LaneAction.PARK:
                op = "cool" if action is LaneAction.COOL else "park"
                shared.cooled(lane, budget if by_model else None, req.scope, op)
        if decision.avoid_lane:
            req.shun(lane.name)
        return decision.retry, decision.delay, decision.counts

    def _error(self, lane: Lane, outcome: Outcome, attempts: int) -> KeymuxError:
        status = f"HTTP {outcome.status}" if outcome.status else "no answer"
        message = (
            f"{lane.provider} key {lane.name!r}: {lane.secret.scrub(outcome.message)} ({status}, "
            f"{attempts} attempt{'s' if attempts != 1 else ''})"
        )
        if outcome.kind is Kind.TRANSPORT:
            tcls = RequestTimeoutError if outcome.error_type == "timeout" else ConnectionError
            return tcls(
                message,
                provider=lane.provider,
                key_name=lane.name,
                status=outcome.status or None,
                attempts=attempts,
            )
        return error_class(outcome.kind)(
            message,
            provider=lane.provider,
            key_name=lane.name,
            status=outcome.status or None,
            attempts=attempts,
            error_type=outcome.error_type,
            code=outcome.code,
        )

    def _succeeded(self, lane: Lane, c: _Call, status: int, usage: Usage) -> None:
        """A 2xx answer was read to its end: settle the budget, count it."""
        req = c.req
        if self.telemetry is not None:
            self._tell(lane, c, "ok", status)
        budget = req.budget or lane.book.get(req.scope)
        if req.reservation is not None:
            budget.settle(req.reservation, usage.total_tokens or None)
        budget.on_success(req.reservation)
        if self.shared is not None:
            self.shared.succeeded(req, usage.total_tokens)
        lane.quota_strikes = 0
        lane.fail_streak = 0
        lane.successes += 1
        lane.input_tokens += usage.input_tokens
        lane.output_tokens += usage.output_tokens

    def _response(
        self, lane: Lane, c: _Call, status: int, parsed: Parsed, raw: Any, now: float
    ) -> Response:
        self._succeeded(lane, c, status, parsed.usage)
        return Response(
            text=parsed.text,
            provider=lane.provider,
            key_name=lane.name,
            model=parsed.model,
            usage=parsed.usage,
            attempts=c.attempts,
            latency_s=now - c.started,
            raw=raw,
            embeddings=parsed.embeddings,
            finish_reason=parsed.finish_reason,
        )

    def _deadline(self, c: _Call, what: str) -> contextlib.AbstractContextManager[Any]:
        return _NO_DEADLINE if c.req.deadline_at is None else _Deadline(self.clock, c, what)

    # -- reader 1: a whole answer, parsed ---------------------------------------------------

    async def call(self, req: Request) -> Response:
        """Run one non-streaming request to its end: a Response, or a KeymuxError."""
        c = _Call(req, self.clock.now())
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            with self._deadline(c, f"{req.provider} {req.endpoint}"):
                while True:
                    lane, exchange = await self._open(c)
                    try:
                        body = await exchange.read()
                    except TransportFailure as exc:
                        outcome = exc.outcome(exchange.status)
                    except BaseException:
                        self.dispatch.release(lane, req)
                        raise
                    else:
                        now = self.clock.now()
                        lane.observe_latency(now - c.sent_at)
                        try:
                            return self._parse(lane, c, exchange.status, body, now)
                        finally:
                            self.dispatch.release(lane, req)
                    finally:
                        exchange.close()
                    delay = self._failed(c, lane, outcome)
                    if delay > 0:
                        await self.clock.sleep(delay)
        except asyncio.CancelledError as exc:
            if task in self._closing_tasks:
                self._closing_tasks.discard(task)
                task.uncancel()
                raise ClosedError(
                    f"{req.provider} request cancelled: the multiplexer closed before it finished",
                    provider=req.provider,
                ) from exc
            raise
        finally:
            self._running.discard(task)

    def _parse(self, lane: Lane, c: _Call, status: int, body: bytes, now: float) -> Response:
        """A 2xx body read by the adapter; MalformedResponseError (not retried: the provider
        may have done the work) when it is not usable."""
        try:
            data = json.loads(body)
            parsed = lane.adapter.parse(c.req.endpoint, data, model=c.req.prepared.model)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            lane.failures += 1
            self._tell(lane, c, Kind.MALFORMED.value, status)
            detail = str(exc) or type(exc).__name__
            error = MalformedResponseError(
                f"{lane.provider} key {lane.name!r}: the answer (HTTP {status}) was not "
                f"usable: {_short(lane.secret.scrub(detail))}",
                provider=lane.provider,
                key_name=lane.name,
                status=status,
                attempts=c.attempts,
            )
            if lane.secret.reveal() not in detail:
                raise error from exc
        else:
            return self._response(lane, c, status, parsed, data, now)
        # the parser quoted the key (an echoing server): raised outside the handler, so that
        # neither __cause__ nor __context__ carries it
        raise error

    # -- reader 2: a stream, decoded --------------------------------------------------------

    async def stream(self, req: Request) -> AsyncGenerator[str | Response, None]:
        """Text deltas, then the final Response. Retried only before the first delta."""
        c = _Call(req, self.clock.now())
        what = f"{req.provider} stream"
        while True:
            with self._deadline(c, what):
                lane, exchange = await self._open(c)
            delivered = 0
            text: list[str] = []
            failure: Outcome | None = None
            final: Response | None = None
            try:
                decoder = lane.adapter.stream_decoder()
                parser = SSEParser()
                while not _finished(decoder):
                    try:
                        with self._deadline(c, what):
                            chunk = await exchange.next_chunk()
                    except TransportFailure as exc:
                        failure = exc.outcome(exchange.status)
                        break
                    try:
                        for event in parser.feed(chunk) if chunk else parser.close():
                            delta = decoder.feed(event)
                            if delta:
                                delivered += 1
                                text.append(delta)
                                yield delta
                            if _finished(decoder):
                                break
                    except (StreamFailure, ValueError, TypeError, KeyError) as exc:
                        failure = _stream_failure(exc, exchange.status)
                        break
                    if not chunk:
                        if not _finished(decoder):
                            failure = _truncated(exchange.status)
                        break
                if failure is None:
                    now = self.clock.now()
                    lane.observe_latency(now - c.sent_at)
                    final = self._response(lane, c, exchange.status, decoder.result(), None, now)
            finally:
                exchange.close()
                if failure is None or delivered or failure.kind is Kind.MALFORMED:
                    # answered, abandoned by the caller, or not to be retried
                    self.dispatch.release(lane, req)
            if final is not None:
                yield final
                return
            assert failure is not None
            if delivered or failure.kind is Kind.MALFORMED:
                lane.failures += 1
                self._tell(lane, c, failure.kind.value, failure.status)
            if delivered:
                raise StreamError(
                    f"{lane.provider} key {lane.name!r}: the stream broke after {delivered} "
                    f"chunks ({sum(map(len, text))} characters) had reached the caller: "
                    f"{lane.secret.scrub(failure.message)}. It is not retried, since part of the "
                    "answer was already delivered.",
                    provider=lane.provider,
                    key_name=lane.name,
                    status=failure.status or None,
                    attempts=c.attempts,
                    error_type=failure.error_type,
                    chunks_received=delivered,
                    text_received="".join(text),
                )
            if failure.kind is Kind.MALFORMED:
                raise MalformedResponseError(
                    f"{lane.provider} key {lane.name!r}: {lane.secret.scrub(failure.message)}",
                    provider=lane.provider,
                    key_name=lane.name,
                    status=failure.status,
                    attempts=c.attempts,
                )
            delay = self._failed(c, lane, failure)
            if delay > 0:
                with self._deadline(c, what):
                    await self.clock.sleep(delay)

    # -- reader 3: an answer passed through -------------------------------------------------

    async def forward(self, req: Request) -> AsyncGenerator[Head | bytes, None]:
        """A forwarded request: first its ``Head``, then its body as bytes, unchanged (a
        stream chunk by chunk as it arrives). Retried only before the first byte reaches the
        caller. When keymux gives up after a provider's error answer, that answer is what
        comes back (``Head.error`` says why keymux stopped); with no answer to show, the
        KeymuxError is raised."""
        c = _Call(req, self.clock.now())
        what = f"{req.provider} request"
        while True:
            try:
                with self._deadline(c, what):
                    lane, exchange = await self._open(c)
            except KeymuxError as exc:
                if c.answer is None:
                    raise
                last, status, headers, body = c.answer
                yield Head(status, headers, last.name, c.attempts, exc)
                yield last.secret.scrub(body)
                return
            head = Head(exchange.status, exchange.headers, lane.name, c.attempts)
            failure: Outcome | None = None
            passed = 0  # bytes that reached the caller
            finished = released = False
            decoder: StreamDecoder | None = None
            try:
                if not _is_event_stream(exchange.headers):
                    try:
                        with self._deadline(c, what):
                            body = await exchange.read()
                    except TransportFailure as exc:
                        failure = exc.outcome(exchange.status)
                    else:
                        lane.observe_latency(self.clock.now() - c.sent_at)
                        self._succeeded(lane, c, exchange.status, _usage_of(lane, body))
                        finished = True
                        exchange.close()
                        self.dispatch.release(lane, req)  # before the caller reads the body
                        released = True
                        yield head
                        yield body
                        return
                else:
                    decoder = lane.adapter.stream_decoder()
                    parser = SSEParser()
                    # bytes kept back until the stream proved sound (its first text, or its end):
                    # until then a failure is retried as if nothing had arrived
                    held: list[bytes] = []
                    kept = 0
                    decoding, proven = True, False
                    while True:
                        try:
                            with self._deadline(c, what):
                                chunk = await exchange.next_chunk()
                        except TransportFailure as exc:
                            failure = exc.outcome(exchange.status)
                            break
                        if decoding:
                            try:
                                for event in parser.feed(chunk) if chunk else parser.close():
                                    if decoder.feed(event):
                                        proven = True
                            except StreamFailure as exc:
                                if not passed:
                                    failure = _stream_failure(exc, exchange.status)
                                    break
                                decoding = False  # the caller sees the error event itself
                            except (ValueError, TypeError, KeyError):
                                # not the provider's format: not ours to judge, pass it on
                                decoding, proven = False, True
                        if (
                            not passed
                            and chunk
                            and not proven
                            and not _finished(decoder)
                            and kept < _HOLD_BYTES
                        ):
                            held.append(chunk)
                            kept += len(chunk)
                            continue
                        if not passed:
                            yield head
                        if held:
                            chunk = b"".join([*held, chunk])
                            held.clear()
                        if not chunk:
                            break
                        passed += len(chunk)
                        yield chunk
                    if failure is None:
                        lane.observe_latency(self.clock.now() - c.sent_at)
                        usage = decoder.result().usage if decoding else Usage()
                        self._succeeded(lane, c, exchange.status, usage)
                        finished = True
            finally:
                if (
                    not finished
                    and failure is None
                    and passed
                    and decoder is not None
                    and _finished(decoder)
                ):
                    # the caller stopped at the provider's end marker (the SDKs do): answered
                    lane.observe_latency(self.clock.now() - c.sent_at)
                    self._succeeded(lane, c, exchange.status, decoder.result().usage)
                    finished = True
                exchange.close()
                if not released and (finished or failure is None or passed):
                    self.dispatch.release(lane, req)
            if finished:
                return
            assert failure is not None
            if passed:
                lane.failures += 1
                self._tell(lane, c, failure.kind.value, failure.status)
                raise StreamError(
                    f"{lane.provider} key {lane.name!r}: the stream broke after {passed} bytes "
                    f"had reached the caller: {lane.secret.scrub(failure.message)}. It is not "
                    "retried, since part of the answer was already delivered.",
                    provider=lane.provider,
                    key_name=lane.name,
                    status=failure.status or None,
                    attempts=c.attempts,
                    error_type=failure.error_type,
                )
            delay = self._failed(c, lane, failure)
            if delay > 0:
                with self._deadline(c, what):
                    await self.clock.sleep(delay)

    # -- shutdown ---------------------------------------------------------------------------

    async def aclose(self, grace: float = 10.0) -> None:
        """Refuse new work, fail waiting requests, give in-flight ones ``grace`` seconds, then
        cancel them with ClosedError; close the HTTP session."""
        if self.closed and not self._running:
            try:
                if self.shared is not None:
                    await self.shared.aclose()
            finally:
                await self.engine.close()
            return
        self.closed = True
        for handle in list(self._probe_handles):
            handle.cancel()
        self._probe_handles.clear()
        self.dispatch.fail_waiting()
        current = asyncio.current_task()
        pending = {t for t in self._running if t is not current and not t.done()}
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                self._closing_tasks.add(task)
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5.0)
        try:
            if self.shared is not None:
                await self.shared.aclose()  # the last counters, then this process leaves
        finally:
            await self.engine.close()

    async def release_loop(self) -> None:
        """The event loop the core ran on is shutting down (``asyncio.run`` ending): fail what
        still waits, close the HTTP session, but stay open: the next use binds a new loop."""
        was_closed = self.closed
        await self.aclose(0.0)
        self.closed = was_closed
        self.dispatch.offer_all()

    def forget_loop(self) -> None:
        """After fork: drop loop-bound state inherited from the parent."""
        self.engine.forget()
        self._running.clear()
        self._closing_tasks.clear()
        self._probe_handles.clear()
        self.dispatch.forget_loop()
        if self.shared is not None:
            self.shared.forget()


def _finished(decoder: StreamDecoder) -> bool:
    """The provider's end marker arrived (a function: the decoder changes ``done`` itself)."""
    return decoder.done


def _stream_failure(exc: Exception, status: int) -> Outcome:
    """An error event (retryable or not) or garbage inside a 2xx stream."""
    if isinstance(exc, StreamFailure):
        return Outcome(
            Kind.OVERLOADED if exc.retryable else Kind.SERVER_ERROR,
            status,
            f"error event in the stream: {exc.message}",
            error_type=exc.error_type,
        )
    return Outcome(
        Kind.MALFORMED, status, f"garbage in the stream: {_short(str(exc) or type(exc).__name__)}"
    )


def _truncated(status: int) -> Outcome:
    return Outcome(
        Kind.TRANSPORT,
        status,
        "the stream ended before the provider's end marker",
        error_type="truncated",
    )


def _is_event_stream(headers: Mapping[str, str]) -> bool:
    return headers.get("Content-Type", "").startswith("text/event-stream")


def _usage_of(lane: Lane, body: bytes) -> Usage:
    """The usage a forwarded JSON answer reports, if keymux can read it (zeros otherwise)."""
    try:
        return lane.adapter.usage_of(json.loads(body))
    except (ValueError, TypeError, KeyError, AttributeError):
        return Usage()


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."
