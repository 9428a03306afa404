"""Post-only quotes the venue just refused as would-take are not resent into the same wall.

A post-only buy refused with "would immediately match" says the venue's best ask is at
or below its price, which our book has not shown yet (it lags the venue by the feed's
latency). Sending a bid at that price or higher again before our book catches up is
refused again: in a fast market the bot would hammer the venue with doomed creates,
each counted against its order-rate limits. The fence holds such quotes back
(:meth:`OrderManager.sync_quotes` reports them as skipped) until our book's touch has
reached the refused price (then the strategy prices below it by itself) or ``hold_s``
has passed, whichever comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Wall:
    price: float
    """A buy wall: the lowest refused bid; a sell wall: the highest refused ask."""
    until_ns: int


@dataclass(slots=True)
class WouldTakeFence:
    hold_ns: int
    """How long a refusal holds at most (the feed's lag, with margin)."""
    _walls: dict[tuple[str, str], _Wall] = field(default_factory=dict)

    def refused(self, symbol: str, side: str, price: float, now_ns: int) -> None:
        """A post-only ``side`` order at ``price`` was refused as would-take."""
        key = (symbol, side)
        wall = self._walls.get(key)
        until = now_ns + self.hold_ns
        if wall is None:
            self._walls[key] = _Wall(price, until)
            return
        # The venue's book is through every refused price: the furthest one counts.
        wall.price = min(wall.price, price) if side == "buy" else max(wall.price, price)
        wall.until_ns = until

    def touch(self, symbol: str, best_bid: float | None, best_ask: float | None) -> None:
        """Our book's touch: a wall it has reached is lifted (our book now shows it)."""
        if not self._walls:
            return
        buy = self._walls.get((symbol, "buy"))
        if buy is not None and best_ask is not None and best_ask <= buy.price:
            del self._walls[(symbol, "buy")]
        sell = self._walls.get((symbol, "sell"))
        if sell is not None and best_bid is not None and best_bid >= sell.price:
            del self._walls[(symbol, "sell")]

    def blocks(self, symbol: str, side: str, price: float, now_ns: int) -> bool:
        """Whether a post-only ``side`` quote at ``price`` would run into a wall."""
        if not self._walls:
            return False
        key = (symbol, side)
        wall = self._walls.get(key)
        if wall is None:
            return False
        if now_ns >= wall.until_ns:
            del self._walls[key]
            return False
        return price >= wall.price if side == "buy" else price <= wall.price

    @property
    def up(self) -> bool:
        """Whether any wall is up (checked on every sync: no dict built for it)."""
        return bool(self._walls)

    def walls(self) -> dict[tuple[str, str], float]:
        """The walls up now (for status and tests)."""
        return {key: wall.price for key, wall in self._walls.items()}
