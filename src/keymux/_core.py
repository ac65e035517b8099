"""The asyncio core: attempts, retries, streams, probes, shutdown. One per Multiplexer.

Which lane a request goes to, and when, is ``_dispatch.Dispatcher``'s business; the core sends
on the lane it is given, reads the answer through the provider's adapter, applies the retry
decision to the lane and the request, and ends every accepted request exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp

from ._clock import Clock
from ._config import MuxConfig
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
from ._http import Engine, TransportFailure, describe
from ._lane import GONE, WAITING, Lane, Request
from ._retry import LaneAction, decide, error_class
from ._types import Kind, Outcome, Parsed, Response
from .providers import SSEParser, StreamDecoder, StreamFailure

__all__ = ["Core"]

log = logging.getLogger("keymux")

StrategyFn = Callable[[list[Lane], float], Lane]

#: failures that make a key cool longer each time they repeat
_KEY_FAILURES = frozenset({Kind.SERVER_ERROR, Kind.TRANSPORT})

#: first and longest wait before a key disabled for billing is probed again
QUOTA_PROBE_FIRST = 300.0
QUOTA_PROBE_MAX = 6 * 3600.0


_NO_DEADLINE = contextlib.nullcontext()


class _Deadline:
    """Cancel the current task at clock time ``at``; turn that into RequestTimeoutError."""

    __slots__ = ("_at", "_clock", "_handle", "_req", "_task", "_what", "expired")

    def __init__(self, clock: Clock, at: float | None, what: str, req: Request) -> None:
        self._clock = clock
        self._at = at
        self._what = what
        self._req = req
        self._handle: Any = None
        self._task: asyncio.Task[Any] | None = None
        self.expired = False

    def _error(self) -> RequestTimeoutError:
        key = self._req.lane_name or self._req.pin
        on = f" (key {key!r})" if key else ""
        return RequestTimeoutError(
            f"{self._what}{on}: the deadline passed",
            provider=self._req.provider,
            key_name=key,
        )

    def __enter__(self) -> _Deadline:
        if self._at is None:
            return self
        if self._clock.now() >= self._at:
            raise self._error()
        self._task = asyncio.current_task()
        self._handle = self._clock.call_at(self._at, self._fire)
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


class Core(Dispatcher):
    """Owns the lanes of every provider and runs requests through them."""

    def __init__(
        self,
        config: MuxConfig,
        *,
        clock: Clock,
        rng: random.Random,
        engine: Engine | None = None,
    ) -> None:
        super().__init__(config, clock=clock)
        self.rng = rng
        self.engine = engine or Engine()
        self._running: set[asyncio.Task[Any]] = set()
        self._closing_tasks: set[asyncio.Task[Any]] = set()
        self._probe_handles: set[Any] = set()

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
        self._take_out(lane, reason, error)
        lane.disabled_reason = reason
        lane.disabled_at = self.clock.wall()
        if probe_after is not None:
            self._schedule_probe(lane, probe_after)

    # -- probing keys that may come back ----------------------------------------------------

    def _schedule_probe(self, lane: Lane, delay: float) -> None:
        lane.probe_at = self.clock.wall() + delay
        if not self._loop_running():
            return
        handle: Any = None

        def fire() -> None:
            self._probe_handles.discard(handle)
            if lane.enabled or lane.removed or self.closed:
                return
            task = asyncio.get_running_loop().create_task(self._probe(lane, delay))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

        handle = self.clock.call_at(self.clock.now() + delay, fire)
        self._probe_handles.add(handle)

    async def _probe(self, lane: Lane, last_delay: float) -> None:
        req = lane.adapter.probe(base_url=lane.base_url, api_key=lane.secret.reveal())
        try:
            status, _, _ = await self.engine.send(req, self._probe_timeout())
        except TransportFailure:
            status = 0
        if 200 <= status < 300:
            self.enable(lane)
        elif not lane.removed and not self.closed:
            self._schedule_probe(lane, min(last_delay * 2, 3600.0))

    def _probe_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=10.0, connect=5.0)

    # -- one request ------------------------------------------------------------------------

    def _error(self, lane: Lane, outcome: Outcome, attempts: int) -> KeymuxError:
        status = f"HTTP {outcome.status}" if outcome.status else "no answer"
        message = (
            f"{lane.provider} key {lane.name!r}: {_scrub(outcome.message, lane)} ({status}, "
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

    def _after_failure(
        self, lane: Lane, req: Request, outcome: Outcome, retries: int, attempts: int
    ) -> tuple[bool, float, bool]:
        """Apply the retry decision's effect on the lane. (retry, delay, counts)."""
        now = self.clock.now()
        budget = lane.budget
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
        if action is LaneAction.COOL:
            if outcome.kind is Kind.RATE_LIMITED:
                budget.on_rate_limited(now, decision.lane_delay)
            else:
                budget.cool(now, decision.lane_delay)
        elif action is LaneAction.PARK:
            budget.park(now, decision.lane_delay)
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
        if decision.avoid_lane:
            req.shun(lane.name)
        return decision.retry, decision.delay, decision.counts

    async def call(self, req: Request) -> Response:
        """Run one non-streaming request to its end: a Response, or a KeymuxError."""
        with (
            _NO_DEADLINE
            if req.deadline_at is None
            else _Deadline(self.clock, req.deadline_at, f"{req.provider} {req.endpoint}", req)
        ):
            started = self.clock.now()
            retries = 0
            attempts = 0
            last: tuple[Lane, Outcome] | None = None
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                while True:
                    try:
                        lane = await self._acquire(req)
                    except NoKeyAvailableError:
                        if last is None:
                            raise
                        # every key this request may use has failed it: the last answer says why
                        # (the provider's message, and AuthenticationError/BadRequestError/...)
                        raise self._error(last[0], last[1], attempts) from None
                    attempts += 1
                    if attempts > 1:
                        lane.retries += 1
                    try:
                        result = await self._attempt(lane, req, attempts, started)
                        if isinstance(result, Response):
                            return result
                        # the answer's effect on the key (cooldown, parking, disabling) must land
                        # before its slot is freed, or the freed slot sends the next waiter
                        # straight into the key that just refused
                        retry, delay, counts = self._after_failure(
                            lane, req, result, retries, attempts
                        )
                    finally:
                        self._release(lane)
                    if not retry:
                        raise self._error(lane, result, attempts)
                    last = (lane, result)
                    if counts:
                        retries += 1
                    if delay > 0:
                        await self.clock.sleep(delay)
            except asyncio.CancelledError as exc:
                if task in self._closing_tasks:
                    self._closing_tasks.discard(task)
                    task.uncancel()
                    raise ClosedError(
                        f"{req.provider} request cancelled: the multiplexer closed before it "
                        "finished",
                        provider=req.provider,
                    ) from exc
                raise
            finally:
                self._running.discard(task)

    async def _attempt(
        self, lane: Lane, req: Request, attempts: int, started: float
    ) -> Response | Outcome:
        adapter = lane.adapter
        http = adapter.build(
            req.endpoint,
            req.params,
            model=req.model,
            stream=False,
            base_url=lane.base_url,
            api_key=lane.secret.reveal(),
        )
        t0 = self.clock.now()
        try:
            status, headers, body = await self.engine.send(http, req.timeout)
        except TransportFailure as exc:
            return exc.outcome()
        now = self.clock.now()
        lane.observe_latency(now - t0)
        budget = lane.budget
        snapshot = adapter.rate_snapshot(headers, self.clock.wall())
        if snapshot is not None:
            budget.observe(snapshot, now, max(0, budget.in_flight - 1))
        if 200 <= status < 300:
            try:
                data = json.loads(body)
                parsed = adapter.parse(req.endpoint, data)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                lane.failures += 1
                detail = str(exc) or type(exc).__name__
                error = MalformedResponseError(
                    f"{lane.provider} key {lane.name!r}: the answer (HTTP {status}) was not "
                    f"usable: {_short_text(_scrub(detail, lane))}",
                    provider=lane.provider,
                    key_name=lane.name,
                    status=status,
                    attempts=attempts,
                )
                if lane.secret.reveal() not in detail:
                    raise error from exc
            else:
                return self._success(lane, req, parsed, attempts, started, raw=data)
            # the parser quoted the key (an echoing server): raised outside the handler, so
            # that neither __cause__ nor __context__ carries it
            raise error
        return adapter.classify(status, headers, body)

    def _success(
        self,
        lane: Lane,
        req: Request,
        parsed: Parsed,
        attempts: int,
        started: float,
        *,
        raw: Any,
    ) -> Response:
        budget = lane.budget
        usage = parsed.usage
        if req.reservation is not None:
            budget.settle(req.reservation, usage.total_tokens or None)
        budget.on_success()
        lane.quota_strikes = 0
        lane.fail_streak = 0
        lane.successes += 1
        lane.input_tokens += usage.input_tokens
        lane.output_tokens += usage.output_tokens
        return Response(
            text=parsed.text,
            provider=lane.provider,
            key_name=lane.name,
            model=parsed.model,
            usage=usage,
            attempts=attempts,
            latency_s=self.clock.now() - started,
            raw=raw,
            embeddings=parsed.embeddings,
            finish_reason=parsed.finish_reason,
        )

    # -- streams ----------------------------------------------------------------------------

    async def stream(self, req: Request) -> AsyncGenerator[str | Response, None]:
        """Text deltas, then the final Response. Retried only before the first delta."""
        started = self.clock.now()
        retries = 0
        attempts = 0
        what = f"{req.provider} stream"
        while True:
            with _Deadline(self.clock, req.deadline_at, what, req):
                lane = await self._acquire(req)
            attempts += 1
            if attempts > 1:
                lane.retries += 1
            delivered = 0
            text: list[str] = []
            failure: Outcome | None = None
            decision = (False, 0.0, True)
            released = False
            try:
                adapter = lane.adapter
                http = adapter.build(
                    req.endpoint,
                    req.params,
                    model=req.model,
                    stream=True,
                    base_url=lane.base_url,
                    api_key=lane.secret.reveal(),
                )
                t0 = self.clock.now()
                try:
                    with _Deadline(self.clock, req.deadline_at, what, req):
                        resp = await self.engine.open(http, req.timeout)
                except TransportFailure as exc:
                    failure = exc.outcome()
                else:
                    try:
                        snapshot = adapter.rate_snapshot(resp.headers, self.clock.wall())
                        if snapshot is not None:
                            lane.budget.observe(
                                snapshot, self.clock.now(), max(0, lane.budget.in_flight - 1)
                            )
                        if not 200 <= resp.status < 300:
                            with _Deadline(self.clock, req.deadline_at, what, req):
                                body = await _read(resp)
                            failure = adapter.classify(resp.status, resp.headers, body)
                        else:
                            parser = SSEParser()
                            decoder = adapter.stream_decoder()
                            content = resp.content
                            while not _finished(decoder):
                                try:
                                    with _Deadline(self.clock, req.deadline_at, what, req):
                                        chunk = await content.readany()
                                except RequestTimeoutError:
                                    raise  # the caller's deadline: not the key's failure
                                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                                    failure = describe(exc).outcome()
                                    break
                                events = parser.feed(chunk) if chunk else parser.close()
                                try:
                                    for event in events:
                                        delta = decoder.feed(event)
                                        if delta:
                                            delivered += 1
                                            text.append(delta)
                                            yield delta
                                        if _finished(decoder):
                                            break
                                except StreamFailure as exc:
                                    failure = Outcome(
                                        Kind.OVERLOADED if exc.retryable else Kind.SERVER_ERROR,
                                        resp.status,
                                        f"error event in the stream: {exc.message}",
                                        error_type=exc.error_type,
                                    )
                                    break
                                except (ValueError, TypeError, KeyError) as exc:
                                    failure = Outcome(
                                        Kind.MALFORMED,
                                        resp.status,
                                        f"garbage in the stream: {_short(exc)}",
                                    )
                                    break
                                if not chunk:
                                    if not _finished(decoder):
                                        failure = Outcome(
                                            Kind.TRANSPORT,
                                            resp.status,
                                            "the stream ended before the provider's end marker",
                                            error_type="truncated",
                                        )
                                    break
                            if failure is None:
                                lane.observe_latency(self.clock.now() - t0)
                                parsed = decoder.result()
                                final = self._success(
                                    lane, req, parsed, attempts, started, raw=None
                                )
                                self._release(lane)
                                released = True
                                yield final
                                return
                    finally:
                        resp.release()
            finally:
                if not released:
                    if failure is not None and not delivered and failure.kind is not Kind.MALFORMED:
                        # as in _call: the key's cooldown before its slot is freed
                        decision = self._after_failure(lane, req, failure, retries, attempts)
                    self._release(lane)
            assert failure is not None
            if delivered:
                lane.failures += 1
                raise StreamError(
                    f"{lane.provider} key {lane.name!r}: the stream broke after {delivered} "
                    f"chunks ({sum(map(len, text))} characters) had reached the caller: "
                    f"{_scrub(failure.message, lane)}. It is not retried, since part of the "
                    "answer was already delivered.",
                    provider=lane.provider,
                    key_name=lane.name,
                    status=failure.status or None,
                    attempts=attempts,
                    error_type=failure.error_type,
                    chunks_received=delivered,
                    text_received="".join(text),
                )
            if failure.kind is Kind.MALFORMED:
                lane.failures += 1
                raise MalformedResponseError(
                    f"{lane.provider} key {lane.name!r}: {_scrub(failure.message, lane)}",
                    provider=lane.provider,
                    key_name=lane.name,
                    status=failure.status,
                    attempts=attempts,
                )
            retry, delay, counts = decision
            if not retry:
                raise self._error(lane, failure, attempts)
            if counts:
                retries += 1
            if delay > 0:
                with _Deadline(self.clock, req.deadline_at, what, req):
                    await self.clock.sleep(delay)

    # -- shutdown ---------------------------------------------------------------------------

    async def aclose(self, grace: float = 10.0) -> None:
        """Refuse new work, fail waiting requests, give in-flight ones ``grace`` seconds, then
        cancel them with ClosedError; close the HTTP session."""
        if self.closed and not self._running:
            await self.engine.close()
            return
        self.closed = True
        for handle in list(self._probe_handles):
            handle.cancel()
        self._probe_handles.clear()
        for ps in self.providers.values():
            for lane in ps.lanes.values():
                if lane.timer is not None:
                    lane.timer.cancel()
                    lane.timer = None
                for w in lane.queue:
                    if w.state == WAITING:
                        w.state = GONE
                        if not w.future.done():
                            w.future.set_exception(
                                ClosedError(
                                    f"{lane.provider} request not sent: the multiplexer closed "
                                    "while it waited in the queue",
                                    provider=lane.provider,
                                )
                            )
                lane.queue.clear()
                lane.n_waiting = 0
            ps.unpinned.clear()
            ps.idle.clear()
        current = asyncio.current_task()
        pending = {t for t in self._running if t is not current and not t.done()}
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                self._closing_tasks.add(task)
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5.0)
        await self.engine.close()

    async def release_loop(self) -> None:
        """The event loop the core ran on is shutting down (``asyncio.run`` ending): fail what
        still waits, close the HTTP session, but stay open: the next use binds a new loop."""
        was_closed = self.closed
        await self.aclose(0.0)
        self.closed = was_closed
        for ps in self.providers.values():
            for lane in ps.lanes.values():
                if lane.enabled:
                    ps.idle[lane] = None

    def forget_loop(self) -> None:
        """After fork: drop loop-bound state inherited from the parent."""
        self.engine.forget()
        self._running.clear()
        self._closing_tasks.clear()
        self._probe_handles.clear()
        for ps in self.providers.values():
            ps.unpinned.clear()
            for lane in ps.lanes.values():
                lane.timer = None
                lane.queue.clear()
                lane.n_waiting = 0
                lane.in_flight = 0
                lane.budget.in_flight = 0
                if lane.enabled:
                    ps.idle[lane] = None


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError):
        return b""


def _finished(decoder: StreamDecoder) -> bool:
    return decoder.done


def _short(exc: BaseException) -> str:
    return _short_text(str(exc) or type(exc).__name__)


def _short_text(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."


def _scrub(text: str, lane: Lane) -> str:
    """Upstream text with this lane's own key masked, in case a server or proxy echoed it."""
    secret = lane.secret.reveal()
    return text.replace(secret, lane.secret.masked) if secret in text else text
