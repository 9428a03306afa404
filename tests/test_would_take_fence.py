"""The would-take fence: after the venue refuses a post-only quote because its book is
already through our price, the same price (or worse) is not resent until our book has
caught up or the hold has passed."""

from __future__ import annotations

import ccxt

from bot.errors import OrderRejected, WouldTake
from bot.exchanges import map_ccxt_error
from bot.orders.fence import WouldTakeFence

MS = 1_000_000


def test_a_refused_bid_blocks_that_price_and_higher_but_not_lower() -> None:
    fence = WouldTakeFence(hold_ns=1000 * MS)
    fence.refused("BTC/USDT", "buy", 100.0, now_ns=0)
    assert fence.blocks("BTC/USDT", "buy", 100.0, 1 * MS)
    assert fence.blocks("BTC/USDT", "buy", 100.5, 1 * MS)
    assert not fence.blocks("BTC/USDT", "buy", 99.5, 1 * MS)
    # Only that market's bids: its asks and other markets are untouched.
    assert not fence.blocks("BTC/USDT", "sell", 100.0, 1 * MS)
    assert not fence.blocks("ETH/USDT", "buy", 100.0, 1 * MS)


def test_a_refused_ask_blocks_that_price_and_lower() -> None:
    fence = WouldTakeFence(hold_ns=1000 * MS)
    fence.refused("X", "sell", 100.0, now_ns=0)
    fence.refused("X", "sell", 101.0, now_ns=5 * MS)  # the venue's bid is at least 101
    assert fence.blocks("X", "sell", 100.5, 6 * MS)
    assert not fence.blocks("X", "sell", 101.5, 6 * MS)


def test_the_wall_lifts_when_our_book_shows_what_the_venue_saw() -> None:
    fence = WouldTakeFence(hold_ns=1000 * MS)
    fence.refused("X", "buy", 100.0, now_ns=0)
    fence.touch("X", best_bid=99.0, best_ask=100.5)  # our book still lags
    assert fence.blocks("X", "buy", 100.0, 2 * MS)
    fence.touch("X", best_bid=99.0, best_ask=100.0)  # now it shows the ask at 100
    assert not fence.blocks("X", "buy", 100.0, 3 * MS)
    assert fence.walls() == {}


def test_the_wall_lifts_after_the_hold_at_most() -> None:
    fence = WouldTakeFence(hold_ns=500 * MS)
    fence.refused("X", "buy", 100.0, now_ns=0)
    assert fence.blocks("X", "buy", 100.0, 499 * MS)
    assert not fence.blocks("X", "buy", 100.0, 500 * MS)


def test_would_take_refusals_map_to_their_own_class() -> None:
    spot = map_ccxt_error(
        ccxt.OrderImmediatelyFillable(
            'binance {"code":-2010,"msg":"Order would immediately match and take."}'
        )
    )
    futures = map_ccxt_error(ccxt.OrderNotFillable("binanceusdm -5022 post only rejected"))
    plain = map_ccxt_error(ccxt.InvalidOrder("binance -1013 Filter failure: LOT_SIZE"))
    assert isinstance(spot, WouldTake)
    assert isinstance(futures, WouldTake)
    assert isinstance(plain, OrderRejected)
    assert not isinstance(plain, WouldTake)
