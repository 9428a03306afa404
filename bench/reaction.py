"""Reaction benchmark: feed message -> strategy decision -> orders handed to the venue.

    .venv/bin/python -m bench.reaction [--quick] [--runs N] [--paced-runs N]

The full in-process path in paper mode, built by ``bot.app.assemble`` from
``config/paper.toml`` exactly as ``backstop run`` builds it: the bundled Binance replay
(as fast as possible) with the ``fracture`` stress overlay, book, depth monitor,
detector, backstop strategy, budget, risk, order manager, paper venue, journal, and the
run's JSON logger writing to /dev/null. Each run moves the fracture (``start_s``) so
the trigger falls on a different message of the recording.

Measured with ``time.perf_counter_ns`` around the real objects, from outside ``bot/``:

* the replay's event iterator is wrapped to time each message's read + parse (this
  includes skipping the bookTicker lines between two used messages);
* the overlay's output is wrapped to stamp the moment the engine receives the event
  (the overlay's own work rewriting the recording is *not* counted: it stands in for
  the market, not for the bot);
* the strategy's ``decide`` and the paper venue's ``create_order`` are wrapped to stamp
  when a decision is returned and when an order is handed to the venue; so is the
  strategy's ``quiet`` (the trader's fast path for a reading the strategy declares it
  asks nothing on: that answer is its decision).

Two sets of runs. *Back to back*: the replay as fast as possible, so every cache and
branch predictor stays warm: the engine's best case. *Paced*: from 2 s after the
fracture start on, messages arrive at the recorded rate, as a live feed's do, and the
CPU idles (or serves other processes) between them; the first minute is still replayed
quickly, for the detector's warm-up. The same trigger costs more cold: that is what a
live bot pays. A paced message that arrives while the bot is busy waits, and the wait
counts.

Reaction = parse time of the message + (stamp - engine received it). "Trigger" is the
message whose book sample moves the detector from calm/arming to engaged.

A third part, *order churn*, prices one order action (a create or a cancel) on the
whole path: the strategy's ask, the order manager, tracker and journal, the paper venue
(matching engine, ccxt order structures) and the replies and ``watch_orders`` updates
coming back. One market, the fracture at ``start_s`` 65, order-rate limits lifted, run
twice over the same events: once as configured (the resting ladder is held while within
``requote_bps``, the default 2) and once with ``requote_bps`` 0, which cancels and
re-sends the ladder on every engaged book update. The engine's time (handling each
event and its after-event work) over the engaged stretch, divided by the extra actions,
is what an action costs; the holding run is its baseline.

A fourth part, *the machine's cold penalty*, times the same small piece of work (one
depth message through the replay's parser) after the process idled for 0, 0.5, 2, 10
and 50 ms: what a pause costs the next message on this machine, which is why a paced
trigger costs more than the same trigger back to back.

Baseline, computed from the same messages (not run): the same path driven by a
1-second clock tick, as Hummingbot's strategies are (its ``Clock`` ticks on whole
multiples of ``tick_size`` = 1 s). A message is acted on at the first tick at or after
its data timestamp, so its reaction is that wait (data time) plus the same measured
processing time. Ratio = baseline / ours.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import statistics
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bench._common import devnull_logger, header, paper_settings, percentiles, row
from bot.app import Run, assemble, replay_symbol_map
from bot.clock import NS_PER_SECOND, ManualClock
from bot.feeds.binance_raw import iter_capture
from bot.feeds.events import BookDelta, BookSnapshot, MarketEvent, levels
from bot.feeds.replay import ReplayFeed, bundled_sample_paths
from bot.feeds.stress import StressedFeed, StressSpec, parse_stress_spec
from bot.settings import Settings

TICK_NS = NS_PER_SECOND
FIRST_START_S = 65.0
"""The detector's baseline needs a minute of book before it can fire (warm-up)."""
LAST_START_S = 600.0
"""The recording is 650 s long; leave room for the ramp, the dwell and the quotes."""
AFTER_START_S = 12.0
"""Data replayed past the fracture start: ramp (3 s) + engage dwell (1 s) + margin."""
PACE_AFTER_START_S = 2.0
"""Paced runs: from here on (data time past the fracture start) events arrive at the
recorded rate, as a live feed's do. The trigger comes at ~3.3-3.5 s (ramp + dwell)."""
PACED_AFTER_START_S = 5.0
"""Paced runs end here: past the trigger and its orders, and 3 s of real time each."""
CHURN_WINDOW_S = (5.0, 30.0)
"""Order churn: the engaged stretch timed, in data seconds after the fracture start
(engaged from ~3.5 s; the overlay holds the book fractured until 33 s)."""


class Msg(NamedTuple):
    """One event as the engine got it."""

    ts_ns: int
    received_ns: int
    """perf_counter_ns when the engine got the event."""
    parse_ns: int
    """Read + parse time of the message (replay iterator, unpaced)."""
    late_ns: int
    """Paced runs: how far behind its scheduled arrival the feed started reading it
    (queueing: the bot was still busy with earlier messages). 0 when not paced."""
    symbol: str
    book: bool

    def reaction_ns(self, stamp_ns: int) -> int:
        """What a live bot would see: queueing + parse + engine time up to ``stamp_ns``."""
        return self.late_ns + self.parse_ns + (stamp_ns - self.received_ns)


@dataclass
class Probe:
    """Stamps collected during one run; indices refer to :attr:`records`."""

    records: list[tuple[int, int, int, int, str, bool]] = field(default_factory=list)
    """One :class:`Msg` per event, kept as plain tuples of atoms: the garbage collector
    stops tracking those, so tens of thousands of records do not lengthen the GC pauses
    that the measured latencies include."""
    decisions: list[tuple[int, int]] = field(default_factory=list)
    """(message index, perf_counter_ns when ``decide`` returned)."""
    orders: list[tuple[int, int, str]] = field(default_factory=list)
    """(message index, perf_counter_ns when ``create_order`` was called, symbol)."""
    triggers: list[tuple[int, str]] = field(default_factory=list)
    """(message index, symbol) of each move from calm/arming to engaged."""
    stages: dict[str, dict[int, int]] = field(default_factory=dict)
    """Stage name -> message index -> perf_counter_ns when that stage was reached
    (first time per message), for the breakdown of the trigger path."""
    handled: list[int] = field(default_factory=list)
    """Per record: ns from handing the event over until the engine asked for the next
    one (its handling and after-event work)."""
    overshoot_ns: int = 0
    """Paced runs: how much longer than asked the pacing sleeps took in all. The
    latencies leave it out (a live bot's messages do not wait for it); the wall time
    of the run includes it."""

    @property
    def current(self) -> int:
        return len(self.records) - 1

    @property
    def msgs(self) -> list[Msg]:
        return [Msg._make(r) for r in self.records]

    def stamp(self, stage: str, t: int) -> None:
        self.stages.setdefault(stage, {}).setdefault(self.current, t)


STAGES = (
    ("book", "book updated (validate + merge)"),
    ("sample", "depth sample taken (bands, slippage)"),
    ("trader", "trader starts (paper venue matched first)"),
    ("decide", "strategy decided (risk, detector, inventory, journal, log)"),
    ("synced", "orders diffed, the first started (budget, risk checks)"),
    ("order", "first order handed to venue (after-event, loop turns, task)"),
)
"""The trigger path, in order: what each stamp marks, and the work since the last one."""


class _TimedMonitor:
    """Stands in for a market's DepthMonitor: stamps when a sample is taken."""

    def __init__(self, inner: Any, probe: Probe) -> None:
        self._inner = inner
        self._probe = probe

    def observe(self, book: Any, ts_ns: int) -> Any:
        sample = self._inner.observe(book, ts_ns)
        self._probe.stamp("sample", time.perf_counter_ns())
        return sample

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _timed(
    events: Callable[[], AsyncIterator[MarketEvent]], took: Callable[[int, int], None]
) -> AsyncIterator[MarketEvent]:
    """``events()``, calling ``took(start, ns)`` with the time each event took to come."""
    it = events().__aiter__()
    clock = time.perf_counter_ns
    while True:
        t0 = clock()
        try:
            event = await it.__anext__()
        except StopAsyncIteration:
            return
        took(t0, clock() - t0)
        yield event


async def preload(settings: Settings, spec: StressSpec) -> list[tuple[MarketEvent, int]]:
    """Every event the replay ``settings`` describe yields through the ``spec`` overlay,
    read now, each with the read + parse time of its message (the overlay's own work
    not included). A replay of its own, on a clock of its own: the run it is for is
    left untouched.

    For :func:`instrument`'s ``preloaded``: a run handing many markets' events over
    from memory spends its CPU on the bot alone. Read live, the overlay's rewriting of
    the recording (as much CPU as the bot itself at 50 markets) competed with the bot
    for the processor and the GIL, which a live bot's market does not.
    """
    replay = ReplayFeed(
        list(settings.feed.replay_files) or bundled_sample_paths(),
        clock=ManualClock(),
        speed=0,
        duration_s=settings.feed.duration_s,
        symbol_map=replay_symbol_map(settings),
    )
    inner = replay.events
    parses: deque[int] = deque()
    setattr(replay, "events", lambda: _timed(inner, lambda _, took: parses.append(took)))  # noqa: B010
    # No collections while the list grows: their pauses (100-200 ms each at 50
    # markets) would land in some message's parse time, and the run would spend them.
    gc.disable()
    try:
        # The scaling overlays emit exactly one event per event read.
        feed = StressedFeed(replay, spec)
        return [(event, parses.popleft()) async for event in feed.events()]
    finally:
        gc.enable()


def instrument(
    run: Run,
    probe: Probe,
    *,
    speed: float = 0.0,
    conflate: bool = False,
    pace_from_s: float = 0.0,
    preloaded: Sequence[tuple[MarketEvent, int]] | None = None,
) -> None:
    """Wrap the run's feed, strategy and venue (instance attributes; ``bot/`` untouched);
    a run assembled without trading gets its feed and depth monitors wrapped only.

    ``speed > 0`` paces the events at ``speed`` x their data time the way
    :class:`~bot.feeds.replay.ReplayFeed` does (sleep only when 1 ms or more ahead); the
    replay itself must then run unpaced, so that its iterator times parsing only.
    ``pace_from_s`` (``stamped`` only) hands the events of the first ``pace_from_s``
    seconds of data over unpaced and paces from there on: the detector's warm-up
    minute is replayed quickly, the trigger arrives at the recorded rate.

    ``conflate`` (paced only) hands the engine what the live feed would: the live feed
    copies ccxt.pro's synced book each time ``watch_order_book`` resolves, so the diffs
    of one market that arrived while the bot was busy reach it as one book update
    (:mod:`bot.feeds.live`). Here, the depth diffs of a market already due when the
    engine asks for its next event are merged into one (last size per price wins);
    trades and other events are still handed over one by one, in order. A merged event
    is charged the wait of its *oldest* diff and the parse time of all of them.

    Paced, the run rehearses a market's trigger while it arms, as a live run does
    (``Run.rehearse``, ``strategy.rehearse_ms``).

    ``preloaded`` (from :func:`preload`) hands those events over instead of reading the
    replay: reading each one keeps the processor busy for its measured read + parse
    time, as a live feed's parsing would; the overlay's work is gone altogether.
    """
    stressed = run.feed
    if not isinstance(stressed, StressedFeed):
        raise SystemExit("expected a replay with a stress overlay")
    # Paced, messages arrive as a live feed's do: the trader keeps the trigger path warm
    # while a market arms, as `backstop run` does with a live feed (strategy.rehearse_ms).
    run.rehearse = speed > 0
    replay = stressed.feed
    parse_times: deque[tuple[int, int]] = deque()
    clock = time.perf_counter_ns

    inner_events: Callable[[], AsyncIterator[MarketEvent]] = replay.events

    def timed_replay() -> AsyncIterator[MarketEvent]:
        return _timed(inner_events, lambda t0, took: parse_times.append((t0, took)))

    outer_events: Callable[[], AsyncIterator[MarketEvent]] = stressed.events
    if preloaded is not None:
        events, data_clock = preloaded, replay.clock

        async def from_memory() -> AsyncIterator[MarketEvent]:
            for event, parse in events:
                t0 = clock()
                while clock() - t0 < parse:  # the parse a live feed would do, on the CPU
                    pass
                parse_times.append((t0, parse))
                data_clock.set(event.ts_ns)  # as the replay does before each event
                yield event

        outer_events = from_memory

    async def stamped() -> AsyncIterator[MarketEvent]:
        wall0 = data0 = 0
        # Paced: a live bot's timeline, simulated alongside the replay's. ``shift`` is
        # how far the replay runs behind it: the overlay's work and sleep overshoot,
        # which a live bot does not have, are not counted as queueing.
        shift = 0
        first_ts: int | None = None
        async for event in outer_events():
            # The scaling overlays emit exactly one event per event read.
            started, parse = parse_times.popleft()
            late = 0
            if first_ts is None:
                first_ts = event.ts_ns
            if speed > 0 and event.ts_ns - first_ts >= pace_from_s * 1e9:
                if not wall0:
                    wall0, data0 = started, event.ts_ns
                due = wall0 + int((event.ts_ns - data0) / speed)
                live_start = max(due, started - shift)  # arrived, and the bot is free
                late = live_start - due
                ahead = due - clock()
                if ahead >= 1_000_000:
                    t = clock()
                    await asyncio.sleep(ahead / 1e9)
                    probe.overshoot_ns += max(0, clock() - t - ahead)
                received = clock()
                shift = received - (live_start + parse)
            else:
                received = clock()
            book = isinstance(event, BookSnapshot | BookDelta)
            probe.records.append((event.ts_ns, received, parse, late, event.symbol, book))
            yield event
            probe.handled.append(clock() - received)

    async def conflated() -> AsyncIterator[MarketEvent]:
        it = outer_events().__aiter__()
        wall0 = data0 = 0
        shift = 0  # as in stamped(): feed-side work and sleep overshoot, not the bot's
        ahead_event: tuple[MarketEvent, int, int] | None = None
        done = False

        async def read() -> tuple[MarketEvent, int, int] | None:
            nonlocal shift, done
            if done:
                return None
            t = clock()
            try:
                event = await it.__anext__()
            except StopAsyncIteration:
                done = True
                return None
            started, parse = parse_times.popleft()
            shift += clock() - t - parse  # the overlay's work stands in for the market
            return event, started, parse

        def due_of(event: MarketEvent) -> int:
            return wall0 + int((event.ts_ns - data0) / speed)

        while True:
            first = ahead_event or await read()
            ahead_event = None
            if first is None:
                return
            event, started, parse = first
            if not wall0:
                wall0, data0 = started, event.ts_ns
            ahead = due_of(event) - (clock() - shift)
            if ahead >= 1_000_000:
                t = clock()
                await asyncio.sleep(ahead / 1e9)
                overshoot = clock() - t - ahead
                shift += overshoot
                probe.overshoot_ns += max(0, overshoot)
            batch = [first]
            while (nxt := await read()) is not None:
                if due_of(nxt[0]) > clock() - shift:
                    ahead_event = nxt
                    break
                batch.append(nxt)
            for event, due, parse in _conflate(batch, due_of):
                received = clock()
                # Reaction = late + parse + (stamp - received) = stamp - shift - due: from
                # the oldest diff's arrival, on the bot's timeline, including the parse
                # of every message read meanwhile and the engine's work on the events
                # of this batch handed over before it.
                late = max(0, received - shift - due - parse)
                book = isinstance(event, BookSnapshot | BookDelta)
                probe.records.append((event.ts_ns, received, parse, late, event.symbol, book))
                yield event
                probe.handled.append(clock() - received)

    setattr(replay, "events", timed_replay)  # noqa: B010 - instance attribute on purpose
    setattr(stressed, "events", conflated if conflate and speed > 0 else stamped)  # noqa: B010

    # Breakdown stamps: the book, the depth monitor, the trader's first and last calls.
    for market in run.engine.markets.values():
        apply = market.book.apply

        def timed_apply(event: Any, _apply: Any = apply) -> Any:
            drop = _apply(event)
            probe.stamp("book", clock())
            return drop

        setattr(market.book, "apply", timed_apply)  # noqa: B010
        setattr(market, "monitor", _TimedMonitor(market.monitor, probe))  # noqa: B010

    trader = run.trader
    if trader is None:  # assembled without trading: feed, books and depth samples only
        return
    assert run.venue is not None
    strategy = trader.strategy
    decide = strategy.decide

    def timed_decide(ctx: Any) -> Any:
        decision = decide(ctx)
        t = clock()
        probe.decisions.append((probe.current, t))
        probe.stamp("decide", t)
        update = ctx.detector
        if update is not None and update.transition is not None and update.transition.engaged:
            probe.triggers.append((probe.current, ctx.symbol))
        return decision

    setattr(strategy, "decide", timed_decide)  # noqa: B010

    quiet = getattr(strategy, "quiet", None)
    if quiet is not None:
        # The trader's fast path: a strategy that declares a reading quiet has decided
        # "nothing" without decide() being called (bot/trader.py). Stamped the same way
        # (the first stamp per message counts, should decide() follow after all).
        def timed_quiet(*args: Any, **kwargs: Any) -> bool:
            answer: bool = quiet(*args, **kwargs)
            if answer:
                t = clock()
                probe.decisions.append((probe.current, t))
                probe.stamp("decide", t)
            return answer

        setattr(strategy, "quiet", timed_quiet)  # noqa: B010

    venue = run.venue
    create = venue.create_order

    async def timed_create(symbol: str, *args: Any, **kwargs: Any) -> Any:
        t = clock()
        probe.orders.append((probe.current, t, symbol))
        probe.stamp("order", t)
        return await create(symbol, *args, **kwargs)

    setattr(venue, "create_order", timed_create)  # noqa: B010

    on_book = trader.risk.on_book

    def timed_on_book(*args: Any, **kwargs: Any) -> Any:
        probe.stamp("trader", clock())
        return on_book(*args, **kwargs)

    setattr(trader.risk, "on_book", timed_on_book)  # noqa: B010
    sync = trader.manager.sync_quotes

    def timed_sync(*args: Any, **kwargs: Any) -> Any:
        result = sync(*args, **kwargs)
        probe.stamp("synced", clock())
        return result

    setattr(trader.manager, "sync_quotes", timed_sync)  # noqa: B010


def _conflate(
    batch: Sequence[tuple[MarketEvent, int, int]], due_of: Callable[[MarketEvent], int]
) -> list[tuple[MarketEvent, int, int]]:
    """``batch`` (event, read start, parse ns), all due: each market's depth diffs merged
    into one at the place of its last, due when the oldest was, with their summed parse
    time; everything else as it came. Returns (event, due, parse)."""
    last: dict[str, int] = {}
    for i, (event, _, _) in enumerate(batch):
        if type(event) is BookDelta:
            last[event.symbol] = i
    merged: dict[str, list[BookDelta]] = {}
    out: list[tuple[MarketEvent, int, int]] = []
    dues: dict[str, int] = {}
    parses: dict[str, int] = {}
    for i, (event, _, parse) in enumerate(batch):
        if type(event) is not BookDelta:
            out.append((event, due_of(event), parse))
            continue
        sym = event.symbol
        merged.setdefault(sym, []).append(event)
        dues.setdefault(sym, due_of(event))
        parses[sym] = parses.get(sym, 0) + parse
        if i == last[sym]:
            out.append((_merge(merged.pop(sym)), dues.pop(sym), parses.pop(sym)))
    return out


def _merge(deltas: Sequence[BookDelta]) -> BookDelta:
    """One diff with the effect of ``deltas`` applied in order (last size per price)."""
    if len(deltas) == 1:
        return deltas[0]
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for d in deltas:
        bids.update(d.bids.tolist())
        asks.update(d.asks.tolist())
    first, final = deltas[0], deltas[-1]
    return BookDelta(
        symbol=final.symbol,
        ts_ns=final.ts_ns,
        bids=levels(list(bids.items())),
        asks=levels(list(asks.items())),
        first_id=first.first_id,
        last_id=final.last_id,
        prev_id=first.prev_id,
        exchange_ts_ns=final.exchange_ts_ns,
    )


async def one_run(start_s: float, *, paced: bool = False) -> Probe:
    with tempfile.TemporaryDirectory(prefix="bench-reaction-") as tmp:
        after = PACED_AFTER_START_S if paced else AFTER_START_S
        settings = paper_settings(
            Path(tmp), feed={"duration_s": start_s + after}, control={"enabled": False}
        )
        spec = parse_stress_spec(f"fracture:start_s={start_s:g}")
        run = await assemble(settings, log=devnull_logger(settings), stress=spec)
        probe = Probe()
        if paced:
            instrument(run, probe, speed=1.0, pace_from_s=start_s + PACE_AFTER_START_S)
        else:
            instrument(run, probe)
        await execute_frozen(run)
    return probe


async def execute_frozen(run: Run) -> None:
    """``run.execute()`` as ``backstop run`` runs (bot/cli.py): the long-lived objects
    built at start-up frozen out of the collector's reach."""
    gc.collect()
    gc.freeze()
    try:
        await run.execute()
    finally:
        gc.unfreeze()


@dataclass
class Churn:
    """One order-churn run: engine time and venue calls over the timed stretch."""

    engine_ns: int = 0
    events: int = 0
    actions: int = 0


async def churn_run(
    requote_bps: float | None, *, window_s: tuple[float, float] = CHURN_WINDOW_S
) -> Churn:
    """The fracture at :data:`FIRST_START_S` on one market, the ladder requoted past
    ``requote_bps`` (None: as configured): engine time (each event's handling and
    after-event work) and ``create_order``/``cancel_order`` calls while ``window_s``
    (data seconds after the fracture start) lasts."""
    start = FIRST_START_S
    # Data time since the replay's first event, as the overlay's start_s counts it.
    lo, hi = (int((start + w) * NS_PER_SECOND) for w in window_s)
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as tmp:
        settings = paper_settings(
            Path(tmp),
            feed={"duration_s": start + window_s[1]},
            control={"enabled": False},
            strategy={} if requote_bps is None else {"backstop": {"requote_bps": requote_bps}},
            # Each requote sends a whole ladder: the default order rate would hold most
            # of them back, and the run would time the rate limiter instead.
            risk={"max_orders_per_second": 10_000, "max_order_burst": 10_000},
        )
        spec = parse_stress_spec(f"fracture:start_s={start:g}")
        run = await assemble(settings, log=devnull_logger(settings), stress=spec)
        events = await preload(settings, spec)
        result = Churn()
        first: list[int] = []
        inside = [False]

        async def from_memory() -> AsyncIterator[MarketEvent]:
            for event, _ in events:
                if not first:
                    first.append(event.ts_ns)
                inside[0] = lo <= event.ts_ns - first[0] < hi
                yield event

        setattr(run.feed, "events", from_memory)  # noqa: B010
        venue = run.venue
        assert venue is not None
        for name in ("create_order", "cancel_order"):
            call = getattr(venue, name)

            async def counted(*args: Any, _call: Any = call, **kwargs: Any) -> Any:
                result.actions += inside[0]
                return await _call(*args, **kwargs)

            setattr(venue, name, counted)
        engine = run.engine
        handle, after = engine.handle, engine._after_event
        assert after is not None
        clock = time.perf_counter_ns
        started = [0]

        def timed_handle(event: MarketEvent) -> None:
            started[0] = clock()
            handle(event)

        async def timed_after() -> None:
            await after()
            if inside[0]:
                result.engine_ns += clock() - started[0]
                result.events += 1

        setattr(engine, "handle", timed_handle)  # noqa: B010
        setattr(engine, "_after_event", timed_after)  # noqa: B010
        await execute_frozen(run)
    return result


def tick_wait_ns(ts_ns: int) -> int:
    """Data time from ``ts_ns`` to the next whole-second tick (0 on a tick)."""
    return -ts_ns % TICK_NS


@dataclass
class Series:
    label: str
    ours_ns: list[int] = field(default_factory=list)
    tick_ns: list[int] = field(default_factory=list)

    def add(self, msg: Msg, stamp_ns: int) -> None:
        ours = msg.reaction_ns(stamp_ns)
        self.ours_ns.append(ours)
        self.tick_ns.append(tick_wait_ns(msg.ts_ns) + ours)


@dataclass
class Results:
    trigger_first: Series
    trigger_all: Series
    decision: Series
    parse: list[int]
    late: list[int]
    triggers: int
    triggers_without_orders: int
    orders_later: int
    """Triggers whose first order went out while a later message was handled."""


def collect(probes: Sequence[Probe]) -> Results:
    """Every book message's decision; the first trigger per market and run."""
    first = Series("trigger -> first quote order handed to venue")
    every = Series("trigger -> last order of that decision")
    decision = Series("book message -> strategy decision")
    parse: list[int] = []
    late: list[int] = []
    n_triggers = without = later = 0
    for p in probes:
        msgs = p.msgs
        parse += [m.parse_ns for m in msgs if m.book]
        late += [m.late_ns for m in msgs]
        seen: set[int] = set()
        for i, t in p.decisions:
            if i not in seen:  # a message is one market's: one decision
                seen.add(i)
                decision.add(msgs[i], t)
        done: set[str] = set()
        for trig, symbol in p.triggers:
            if symbol in done:
                continue
            done.add(symbol)
            n_triggers += 1
            after = [(i, t) for i, t, s in p.orders if i >= trig and s == symbol]
            if not after:
                without += 1
                continue
            msg = msgs[trig]
            first.add(msg, after[0][1])
            batch = [t for i, t in after if i == after[0][0]]
            every.add(msg, batch[-1])
            later += after[0][0] != trig
    return Results(first, every, decision, parse, late, n_triggers, without, later)


def breakdown(probes: Sequence[Probe]) -> list[tuple[str, list[int]]]:
    """Per stage of the trigger path: time since the previous stage, one value per run
    whose first trigger put its first order out while handling that same message."""
    steps: list[tuple[str, list[int]]] = [("read + parse the message", [])]
    steps += [(label, []) for _, label in STAGES]
    for p in probes:
        if not p.triggers:
            continue
        i = p.triggers[0][0]
        times = [p.stages.get(stage, {}).get(i) for stage, _ in STAGES]
        if any(t is None for t in times):
            continue
        msg = Msg._make(p.records[i])
        steps[0][1].append(msg.parse_ns)
        prev = msg.received_ns
        for (_, values), t in zip(steps[1:], times, strict=True):
            assert t is not None
            values.append(t - prev)
            prev = t
    return steps


def starts(runs: int) -> list[float]:
    if runs == 1:
        return [FIRST_START_S]
    step = (LAST_START_S - FIRST_START_S) / (runs - 1)
    return [round(FIRST_START_S + i * step, 1) for i in range(runs)]


COLUMNS = (
    "measure",
    "n",
    "ours p50 us",
    "ours p99 us",
    "ours max us",
    "tick p50 ms",
    "tick p99 ms",
    "tick max ms",
    "p50 ratio",
    "p99 ratio",
)
WIDTHS = (44, 6, 11, 11, 11, 11, 11, 11, 9, 9)


def table(res: Results, *, decisions: bool = True) -> list[str]:
    lines = [row(COLUMNS, WIDTHS)]
    series = (res.trigger_first, res.trigger_all) + ((res.decision,) if decisions else ())
    for s in series:
        o50, o99, omax = percentiles([v / 1e3 for v in s.ours_ns])
        t50, t99, tmax = percentiles([v / 1e6 for v in s.tick_ns])
        lines.append(
            row(
                (
                    s.label,
                    f"{len(s.ours_ns):,}",
                    f"{o50:,.1f}",
                    f"{o99:,.1f}",
                    f"{omax:,.1f}",
                    f"{t50:,.1f}",
                    f"{t99:,.1f}",
                    f"{tmax:,.1f}",
                    f"{t50 * 1e3 / o50:,.0f}x",
                    f"{t99 * 1e3 / o99:,.0f}x",
                ),
                WIDTHS,
            )
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.reaction", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="2 runs + 1 paced (smoke run)")
    ap.add_argument("--runs", type=int, default=None, help="replays, one trigger each (20)")
    ap.add_argument(
        "--paced-runs",
        type=int,
        default=None,
        help="replays paced at the recorded rate around the trigger (default: --runs)",
    )
    args = ap.parse_args(argv)
    runs = args.runs or (2 if args.quick else 20)
    paced_runs = args.paced_runs if args.paced_runs is not None else (1 if args.quick else runs)
    if runs < 1 or paced_runs < 0:
        ap.error("--runs must be >= 1 and --paced-runs >= 0")
    print(header("reaction benchmark (bench/reaction.py)"))
    # Quick: two early fractures, so the smoke run replays little data.
    plan = [FIRST_START_S, FIRST_START_S + 10] if args.quick and not args.runs else starts(runs)
    t0 = time.perf_counter()
    probes = [asyncio.run(one_run(s)) for s in plan]
    wall = time.perf_counter() - t0
    print(
        f"path: bot.app.assemble(config/paper.toml), bundled replay + fracture at start_s "
        f"{plan[0]:g}..{plan[-1]:g} ({runs} runs, {wall:.1f} s), paper mode, JSON logs "
        f"to /dev/null; in-process, GC on"
    )
    print(
        "ours: wall time (perf_counter_ns) = message read+parse + engine -> stamp; "
        "tick: the same path on a 1 s clock tick, computed from each message's data "
        "timestamp (wait to the next whole second) + our processing time; ratio = tick / ours"
    )
    report("back to back: the replay as fast as possible (every cache warm)", probes, runs)
    if paced_runs:
        t0 = time.perf_counter()
        paced = [asyncio.run(one_run(s, paced=True)) for s in starts(paced_runs)]
        wall = time.perf_counter() - t0
        report(
            f"paced: from {PACE_AFTER_START_S:g} s after the fracture start, messages arrive "
            f"at the recorded rate, as a live feed's do, and the CPU idles between them "
            f"({paced_runs} runs, {wall:.1f} s)",
            paced,
            paced_runs,
            # Most book messages of a paced run are its warm-up minute, replayed quickly.
            decisions=False,
        )
    churn(reps=1 if args.quick else 5, window_s=(5.0, 10.0) if args.quick else CHURN_WINDOW_S)
    cold_penalty(reps=5 if args.quick else 30)
    return 0


COLD_GAPS_S = (0.0, 0.0005, 0.002, 0.01, 0.05)
"""How long the processor idles before each parse in :func:`cold_penalty`."""


def cold_penalty(*, reps: int) -> None:
    """Part 4: what idling costs the next message on this machine. The same work, one
    depth message of the bundled sample through the replay's parser, timed after the
    process slept for each of :data:`COLD_GAPS_S` (a different message each time, so
    nothing is answered from a cache of our own). Paced runs pay this on every stage the
    trigger's message runs first after a pause; back to back, nothing idles."""
    sample = _depth_lines(reps * len(COLD_GAPS_S) + 200)
    warmup, rest = sample[:200], iter(sample[200:])
    for line in warmup:
        _parse_one(line)
    print(
        f"\nthe machine's cold penalty: one depth message parsed after the process idled "
        f"(time.sleep), p50 of {reps} each"
    )
    widths = (36, 9, 9, 11)
    print(row(("idle before the message", "p50 us", "p90 us", "vs no idle"), widths))
    base = 0.0
    for gap in COLD_GAPS_S:
        took = []
        for _ in range(reps):
            if gap:
                time.sleep(gap)
            took.append(_parse_one(next(rest)) / 1e3)
        p50 = statistics.median(took)
        p90 = statistics.quantiles(took, n=10)[-1] if len(took) > 1 else took[0]
        base = base or p50
        label = "none (back to back)" if gap == 0 else f"{gap * 1e3:g} ms"
        print(row((label, f"{p50:,.1f}", f"{p90:,.1f}", f"{p50 / base:.1f}x"), widths))


def _depth_lines(n: int) -> list[bytes]:
    """The first ``n`` depth-diff lines of the bundled sample."""
    out: list[bytes] = []
    with gzip.open(bundled_sample_paths()[0], "rb") as f:
        for line in f:
            if b"depthUpdate" in line:
                out.append(line.rstrip(b"\n"))
                if len(out) == n:
                    break
    return out


def _parse_one(line: bytes) -> int:
    """ns to parse ``line`` into its event, as the replay does."""
    skipped: Counter[str] = Counter()
    malformed: Counter[str] = Counter()
    t0 = time.perf_counter_ns()
    next(iter_capture((line,), skipped=skipped, malformed=malformed))
    return time.perf_counter_ns() - t0


def churn(*, reps: int, window_s: tuple[float, float]) -> None:
    """Part 3: what one order action costs (:func:`churn_run`), medians of ``reps``."""
    t0 = time.perf_counter()
    runs: dict[float | None, list[Churn]] = {None: [], 0.0: []}
    for _ in range(reps):  # interleaved: drift on the machine hits both alike
        for requote in runs:
            runs[requote].append(asyncio.run(churn_run(requote, window_s=window_s)))
    wall = time.perf_counter() - t0
    lo, hi = window_s
    print(
        f"\norder churn: one market, fracture at start_s {FIRST_START_S:g}, order-rate "
        f"limits lifted, engine time from {lo:g} to {hi:g} s after the start (engaged), "
        f"back to back; median of {reps} run(s) each, interleaved ({wall:.1f} s)"
    )
    widths = (52, 8, 8, 11, 13)
    print(row(("run", "events", "actions", "engine ms", "per event us"), widths))
    medians: dict[float | None, tuple[float, float]] = {}
    for requote, label in (
        (None, "holding the ladder (requote_bps as configured)"),
        (0.0, "requoting on every change (requote_bps 0)"),
    ):
        done = runs[requote]
        ns = statistics.median(r.engine_ns for r in done)
        actions = statistics.median(r.actions for r in done)
        events = statistics.median(r.events for r in done)
        medians[requote] = (ns, actions)
        per_event = f"{ns / events / 1e3:,.1f}" if events else "-"
        cells = (label, f"{events:,.0f}", f"{actions:,.0f}", f"{ns / 1e6:,.1f}", per_event)
        print(row(cells, widths))
    (hold_ns, hold_n), (churn_ns, churn_n) = medians[None], medians[0.0]
    if churn_n > hold_n:
        per = (churn_ns - hold_ns) / (churn_n - hold_n) / 1e3
        print(
            f"per order action (a create or a cancel), all in: {per:,.1f} us "
            f"= (engine ms requoting - holding) / (actions requoting - holding)"
        )
    else:
        print("per order action: no extra actions when requoting (nothing to divide by)")


def report(title: str, probes: Sequence[Probe], runs: int, *, decisions: bool = True) -> None:
    """One set of runs: the latency table, the trigger's stages, the notes."""
    res = collect(probes)
    print(f"\n{title}")
    for line in table(res, decisions=decisions):
        print(line)
    steps = breakdown(probes)
    print(f"\nwhere the time goes at the trigger ({len(steps[0][1])} runs), us")
    print(row(("stage: work since the previous stamp", "p50", "max"), (62, 9, 9)))
    for label, values in steps:
        p50, _, pmax = percentiles([v / 1e3 for v in values])
        print(row((label, f"{p50:,.1f}", f"{pmax:,.1f}"), (62, 9, 9)))
    p50, p99, pmax = percentiles([v / 1e3 for v in res.parse])
    print(
        f"\nincluded above: read+parse of a depth message p50 {p50:.1f} us, p99 {p99:.1f} us, "
        f"max {pmax:.1f} us"
    )
    if res.triggers < runs:
        print(f"runs without a trigger: {runs - res.triggers}")
    if res.triggers_without_orders:
        print(f"triggers without an order after them: {res.triggers_without_orders}")
    if res.orders_later:
        print(f"triggers whose first order left during a later message: {res.orders_later}")


if __name__ == "__main__":
    raise SystemExit(main())
