"""The risk engine's fused default checks against the check-by-check chain.

``check_after_valid`` must return exactly what ``check_order(..., CHECKS_AFTER_VALID)``
returns (the same first denial, word for word, or None) for spot and contract markets,
on quotes that pass, that break each limit, and that sit on the limits' edges.
"""

from __future__ import annotations

import math
import random

from bot.positions import PerpLimits
from bot.risk.checks import CHECKS_AFTER_VALID, QuoteContext, check_after_valid, check_order
from bot.settings.models import RiskSettings
from strategies.base import MarketRules, Quote

LIMITS = (
    RiskSettings(),
    RiskSettings(
        max_order_quote=500.0,
        max_order_base={"BTC": 0.01, "ETH": 1.0},
        max_position_base={"BTC": 0.05},
        max_open_orders_per_market=4,
        price_band_bps=50.0,
        fat_finger_bps=400.0,
        fat_finger_order_quote=900.0,
    ),
)


def _context(rng: random.Random, mid: float) -> QuoteContext:
    perp = rng.random() < 0.4
    spread = mid * rng.uniform(0, 0.002)
    return QuoteContext(
        mid=rng.choice([mid, mid, mid, None, math.nan, 0.0]),
        best_bid=rng.choice([mid - spread, None]),
        best_ask=rng.choice([mid + spread, None]),
        position_base=rng.uniform(-0.1, 0.1),
        resting_buy_base=rng.uniform(0, 0.05),
        resting_sell_base=rng.uniform(0, 0.05),
        open_orders=rng.randint(0, 12),
        market_committed_quote=rng.uniform(0, 6_000),
        total_committed_quote=rng.uniform(0, 12_000),
        rules=MarketRules(contract_size=rng.choice([1.0, 0.001, 100.0]), inverse=rng.random() < 0.3)
        if perp
        else MarketRules(),
        leverage=rng.choice([1.0, 5.0, 20.0]) if perp else None,
        perp=PerpLimits(
            max_position_contracts=rng.choice([None, 5.0, 50.0]),
            max_position_notional_quote=rng.choice([None, 2_000.0]),
        )
        if perp
        else None,
    )


def test_fused_checks_say_what_the_chain_says() -> None:
    rng = random.Random(13)
    denials: set[str] = set()
    for _ in range(20_000):
        mid = rng.choice([60_000.0, 3_000.0, 1.0])
        ctx = _context(rng, mid)
        away = rng.choice([0.0, 1e-4, 4e-3, 6e-3, 0.05, -1e-4, -6e-3, -0.05])
        quote = Quote(
            symbol=rng.choice(["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "SOL/USDT"]),
            side=rng.choice(["buy", "sell"]),
            price=mid * (1 + away),
            amount=rng.choice([1e-4, 1e-3, 0.01, 0.02, 0.2, 2.0]) * 60_000 / mid,
            post_only=rng.random() < 0.8,
            tag=rng.choice(["bid0", "taker:x", "replenish:sell", ""]),
        )
        for limits in LIMITS:
            want = check_order(quote, ctx, limits, CHECKS_AFTER_VALID)
            assert check_after_valid(quote, ctx, limits) == want, (quote, ctx, limits)
            denials.add((want or "ALLOWED").split(":", 1)[0])
    # Every check decided some of the cases.
    assert denials >= {
        "ALLOWED",
        "NO_REFERENCE_PRICE",
        "FAT_FINGER_PRICE",
        "FAT_FINGER_NOTIONAL",
        "PRICE_OUTSIDE_BAND",
        "WOULD_CROSS",
        "NOTIONAL_EXCEEDS_MAX_PER_ORDER",
        "AMOUNT_EXCEEDS_MAX_PER_ORDER",
        "OPEN_ORDERS_EXCEED_MAX",
        "MARKET_NOTIONAL_EXCEEDS_MAX",
        "TOTAL_NOTIONAL_EXCEEDS_MAX",
        "POSITION_EXCEEDS_MAX",
        "CONTRACTS_EXCEED_MAX",
        "POSITION_NOTIONAL_EXCEEDS_MAX",
    }, denials
