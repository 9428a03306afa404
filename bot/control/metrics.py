"""Prometheus metrics for one daemon, in their own registry.

No metric touches prometheus-client's global default registry: two daemons (or a test
next to a daemon) in one process must not share or collide on counters. The daemon
calls the ``set_*``/``record_*`` methods as things happen; ``/metrics`` renders them.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Feed latency: exchange timestamp -> our receipt. Sub-millisecond (replay) up to the
# seconds a lagging websocket can reach before the stale-book guard fires.
LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

KILL_SWITCH_STATES = ("armed", "tripped_cancelling", "tripped_flat")


def _band(band_bps: float) -> str:
    return f"{band_bps:g}"


class Metrics:
    """Every metric the daemon exposes. Attribute names match the metric names."""

    def __init__(self, namespace: str = "backstop") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, ns = self.registry, namespace
        self.depth_quote = Gauge(
            "depth_quote",
            "Resting depth within a band of mid, in quote currency",
            ["symbol", "band_bps", "side"],
            namespace=ns,
            registry=r,
        )
        self.depth_threshold_quote = Gauge(
            "depth_threshold_quote",
            "Depth below which a band counts as fractured",
            ["symbol", "band_bps", "side"],
            namespace=ns,
            registry=r,
        )
        self.engaged = Gauge(
            "engaged",
            "1 while the backstop is engaged on the market",
            ["symbol"],
            namespace=ns,
            registry=r,
        )
        self.warning_probability = Gauge(
            "warning_probability",
            "Early warning: probability that a depth fracture starts within the model's "
            "horizon (docs/early-warning.md)",
            ["symbol"],
            namespace=ns,
            registry=r,
        )
        self.warning_alarm = Gauge(
            "warning_alarm",
            "1 while the early warning is up",
            ["symbol"],
            namespace=ns,
            registry=r,
        )
        self.paused = Gauge(
            "paused",
            "1 while the market is paused (operator or guard)",
            ["symbol"],
            namespace=ns,
            registry=r,
        )
        self.open_orders = Gauge(
            "open_orders", "Our open orders on the market", ["symbol"], namespace=ns, registry=r
        )
        self.orders = Counter(
            "orders",
            "Order events (placed, cancelled, rejected, failed)",
            ["symbol", "event"],
            namespace=ns,
            registry=r,
        )
        self.orders_held_back = Counter(
            "orders_held_back",
            "Creates the bot decided but held back: order rate, a busy side, a would-take wall",
            ["symbol"],
            namespace=ns,
            registry=r,
        )
        self.fills = Counter(
            "fills", "Fills of our orders", ["symbol", "side"], namespace=ns, registry=r
        )
        self.filled_quote = Counter(
            "filled_quote",
            "Notional of our fills, in quote currency",
            ["symbol", "side"],
            namespace=ns,
            registry=r,
        )
        self.inventory = Gauge(
            "inventory",
            "Reserve holdings per asset",
            ["symbol", "asset"],
            namespace=ns,
            registry=r,
        )
        self.committed_quote = Gauge(
            "committed_quote",
            "Quote value locked in open orders",
            ["symbol"],
            namespace=ns,
            registry=r,
        )
        self.pnl_quote = Gauge(
            "pnl_quote",
            "Profit and loss in quote currency (realised, unrealised)",
            ["symbol", "kind"],
            namespace=ns,
            registry=r,
        )
        self.guard_trips = Counter(
            "guard_trips",
            "Guard triggers by guard and level (warn, pause, kill)",
            ["guard", "level", "symbol"],
            namespace=ns,
            registry=r,
        )
        self.kill_switch_state = Gauge(
            "kill_switch_state",
            "1 for the kill switch's current state, 0 for the others",
            ["state"],
            namespace=ns,
            registry=r,
        )
        self.feed_latency_seconds = Histogram(
            "feed_latency_seconds",
            "Exchange timestamp to receipt of book updates",
            ["symbol"],
            buckets=LATENCY_BUCKETS_S,
            namespace=ns,
            registry=r,
        )
        self.feed_age_seconds = Gauge(
            "feed_age_seconds",
            "Seconds since the last book update",
            ["symbol"],
            namespace=ns,
            registry=r,
        )
        self.control_requests = Counter(
            "control_requests",
            "Control API requests by endpoint and HTTP status",
            ["endpoint", "status"],
            namespace=ns,
            registry=r,
        )
        self.control_auth_failures = Counter(
            "control_auth_failures",
            "Control API requests refused for a missing or wrong token",
            namespace=ns,
            registry=r,
        )
        self.set_kill_switch("armed")

        self.options_delta = Gauge(
            "options_delta",
            "Option book: delta of the option positions (base units, e.g. BTC); "
            "kind=options, or kind=net with the underlying's position (the hedge)",
            ["underlying", "kind"],
            namespace=ns,
            registry=r,
        )
        self.options_vega = Gauge(
            "options_vega",
            "Option book: vega of the option positions, quote per vol point",
            ["underlying"],
            namespace=ns,
            registry=r,
        )
        self.options_gamma = Gauge(
            "options_gamma",
            "Option book: gamma of the option positions, base units of delta per 1% move "
            "of the forward",
            ["underlying"],
            namespace=ns,
            registry=r,
        )
        self.options_engaged = Gauge(
            "options_engaged",
            "Option books whose vega-depth detector is engaged (backstop quoting)",
            ["underlying"],
            namespace=ns,
            registry=r,
        )
        self.options_episodes = Gauge(
            "options_episodes",
            "Option fracture episodes since start (all option books)",
            ["underlying"],
            namespace=ns,
            registry=r,
        )

    # ---- updates (the daemon calls these) ------------------------------------------

    def set_options(
        self,
        underlying: str,
        *,
        delta: float,
        net_delta: float,
        vega: float,
        gamma: float = 0.0,
        engaged: int,
        episodes: int,
    ) -> None:
        """The option book's greeks and detectors (``OptionDesk.gauges``)."""
        self.options_delta.labels(underlying, "options").set(delta)
        self.options_delta.labels(underlying, "net").set(net_delta)
        self.options_vega.labels(underlying).set(vega)
        self.options_gamma.labels(underlying).set(gamma)
        self.options_engaged.labels(underlying).set(engaged)
        self.options_episodes.labels(underlying).set(episodes)

    def set_depth(
        self,
        symbol: str,
        band_bps: float,
        *,
        bid_quote: float,
        ask_quote: float,
        threshold_quote: tuple[float | None, float | None] = (None, None),
    ) -> None:
        """Depth within ``band_bps`` per side; ``threshold_quote``: the detector's
        fracture level per side (bid, ask) on the band it watches, when known."""
        band = _band(band_bps)
        self.depth_quote.labels(symbol, band, "bid").set(bid_quote)
        self.depth_quote.labels(symbol, band, "ask").set(ask_quote)
        for side, level in zip(("bid", "ask"), threshold_quote, strict=True):
            if level is not None:
                self.depth_threshold_quote.labels(symbol, band, side).set(level)

    def set_engaged(self, symbol: str, engaged: bool) -> None:
        self.engaged.labels(symbol).set(1 if engaged else 0)

    def set_warning(self, symbol: str, probability: float | None, *, up: bool) -> None:
        """The early warning's latest probability (None before its first update) and alarm."""
        if probability is not None:
            self.warning_probability.labels(symbol).set(probability)
        self.warning_alarm.labels(symbol).set(1 if up else 0)

    def set_paused(self, symbol: str, paused: bool) -> None:
        self.paused.labels(symbol).set(1 if paused else 0)

    def set_open_orders(self, symbol: str, count: int, *, committed_quote: float) -> None:
        self.open_orders.labels(symbol).set(count)
        self.committed_quote.labels(symbol).set(committed_quote)

    def record_order(self, symbol: str, event: str) -> None:
        """``event``: placed, cancelled, rejected or failed (keep the set small: it is a label)."""
        self.orders.labels(symbol, event).inc()

    def record_held_back(self, symbol: str, count: int) -> None:
        if count > 0:
            self.orders_held_back.labels(symbol).inc(count)

    def record_fill(self, symbol: str, side: str, quote_notional: float) -> None:
        self.fills.labels(symbol, side).inc()
        self.filled_quote.labels(symbol, side).inc(abs(quote_notional))

    def set_inventory(self, symbol: str, holdings: Mapping[str, float]) -> None:
        for asset, amount in holdings.items():
            self.inventory.labels(symbol, asset).set(amount)

    def set_pnl(self, symbol: str, *, realised_quote: float, unrealised_quote: float) -> None:
        self.pnl_quote.labels(symbol, "realised").set(realised_quote)
        self.pnl_quote.labels(symbol, "unrealised").set(unrealised_quote)

    def record_guard_trip(self, guard: str, level: str, symbol: str = "") -> None:
        """A guard fired; ``symbol`` empty for guards that are not per market."""
        self.guard_trips.labels(guard, level, symbol).inc()

    def set_kill_switch(self, state: str) -> None:
        if state not in KILL_SWITCH_STATES:
            raise ValueError(f"unknown kill switch state {state!r}; one of {KILL_SWITCH_STATES}")
        for s in KILL_SWITCH_STATES:
            self.kill_switch_state.labels(s).set(1 if s == state else 0)

    def observe_feed_latency(self, symbol: str, seconds: float) -> None:
        # Clock skew can make exchange time run ahead of ours: count it as zero latency
        # rather than as a negative observation that would skew the histogram's sum.
        self.feed_latency_seconds.labels(symbol).observe(max(0.0, seconds))

    def set_feed_age(self, symbol: str, seconds: float) -> None:
        self.feed_age_seconds.labels(symbol).set(seconds)

    def record_control_request(self, endpoint: str, status: int) -> None:
        self.control_requests.labels(endpoint, str(status)).inc()

    def record_auth_failure(self) -> None:
        self.control_auth_failures.inc()

    # ---- exposition -------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format (``content_type``) of every metric."""
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST
