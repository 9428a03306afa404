"""Binance futures JSON (REST ``/fapi`` and ``/dapi``, and the user/market streams) for
the futures engine's objects. COIN-M's differences are added by :func:`coinm_order`,
:func:`coinm_trade` and the inverse branches (``cumBase``, ``baseQty``, ``pair``,
``notionalValue``, brackets in contracts).

Field names follow Binance's futures API docs; what ccxt's ``parse_order``,
``parse_trade``, ``parse_balance_custom`` (linear), ``parse_position_risk``,
``parse_funding_rate``, ``parse_income`` and ccxt.pro's ``parse_ws_order``,
``parse_ws_trade``, ``handle_balance``/``handle_positions`` read is covered. Numbers
are decimal strings and times ms, as on the venue.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bot.exchange_sim import ws_wire
from bot.exchange_sim.engine import SimOrder, SimTrade
from bot.exchange_sim.events import AccountChanged, DepthDiff, OrderChanged, PublicTrade
from bot.exchange_sim.futures import MAX_LEVERAGE, FuturesEngine, Income
from bot.exchange_sim.views import num

Json = dict[str, Any]
ZERO = Decimal(0)


def _avg(order: SimOrder) -> str:
    return num(order.cumm_quote / order.executed_qty) if order.executed_qty else num(ZERO)


def order_json(order: SimOrder, *, with_time: bool = True) -> Json:
    """An order as ``POST``/``GET``/``DELETE /fapi/v1/order`` and ``openOrders`` show it."""
    out: Json = {
        "orderId": order.order_id,
        "symbol": order.symbol,
        "status": order.status,
        "clientOrderId": order.client_order_id,
        "price": num(order.price),
        "avgPrice": _avg(order),
        "origQty": num(order.orig_qty),
        "executedQty": num(order.executed_qty),
        "cumQty": num(order.executed_qty),
        "cumQuote": num(order.cumm_quote),
        "timeInForce": order.time_in_force,
        "type": order.type,
        "reduceOnly": order.reduce_only,
        "closePosition": False,
        "side": order.side,
        "positionSide": "BOTH",
        "stopPrice": num(ZERO),
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": order.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
        "updateTime": order.update_ms,
    }
    if with_time:
        out["time"] = order.time_ms
    return out


def _pair(symbol: str) -> str:
    """COIN-M's ``pair`` (``BTCUSD`` for ``BTCUSD_PERP``)."""
    return symbol.split("_", 1)[0]


def coinm_order(out: Json, engine: FuturesEngine, order: SimOrder) -> None:
    """An order's COIN-M fields: the filled value in BTC (``cumBase``) for ``cumQuote``,
    and the average price that value implies (harmonic over the fills)."""
    spec = engine.positions[order.symbol].spec
    cum_base = sum(
        (
            spec.value(t.qty, t.price)
            for t in engine.trades
            if t.order_id == order.order_id and t.symbol == order.symbol
        ),
        ZERO,
    )
    del out["cumQuote"]
    out["cumBase"] = num(cum_base)
    out["pair"] = _pair(order.symbol)
    if cum_base:
        out["avgPrice"] = num(order.executed_qty * spec.contract_size / cum_base)


def coinm_trade(out: Json, engine: FuturesEngine, trade: SimTrade) -> None:
    """A trade's COIN-M fields: its value in BTC (``baseQty``) for ``quoteQty``."""
    spec = engine.positions[trade.symbol].spec
    del out["quoteQty"]
    out["baseQty"] = num(spec.value(trade.qty, trade.price))
    out["marginAsset"] = spec.settle
    out["pair"] = _pair(trade.symbol)


def user_trade_json(trade: SimTrade) -> Json:
    """``GET /fapi/v1/userTrades`` entry."""
    return {
        "buyer": trade.is_buyer,
        "commission": num(trade.commission),
        "commissionAsset": trade.commission_asset,
        "id": trade.trade_id,
        "maker": trade.is_maker,
        "orderId": trade.order_id,
        "price": num(trade.price),
        "qty": num(trade.qty),
        "quoteQty": num(trade.quote_qty),
        "realizedPnl": num(trade.realized_pnl),
        "side": "BUY" if trade.is_buyer else "SELL",
        "positionSide": "BOTH",
        "symbol": trade.symbol,
        "time": trade.time_ms,
    }


def _position_core(engine: FuturesEngine, symbol: str) -> Json:
    pos = engine.positions[symbol]
    mark = engine.mark(symbol) or pos.entry
    upnl = pos.unrealised(mark) if mark else ZERO
    notional = pos.spec.value(abs(pos.contracts), mark) if mark else ZERO
    signed_notional = notional if pos.contracts >= 0 else -notional
    return {
        "symbol": symbol,
        "positionSide": "BOTH",
        "positionAmt": num(pos.contracts),
        "unrealizedProfit": num(upnl),
        "isolatedMargin": num(pos.margin + upnl) if pos.contracts else num(ZERO),
        "notional": num(signed_notional),
        "isolatedWallet": num(pos.margin),
        "initialMargin": num(pos.initial_margin(abs(pos.contracts), mark) if mark else ZERO),
        "maintMargin": num(pos.maintenance(mark) if mark else ZERO),
        "updateTime": engine.now_ms(),
    }


def position_risk_json(engine: FuturesEngine, symbol: str) -> Json:
    """``GET /fapi/v3/positionRisk`` (and v2) entry."""
    pos = engine.positions[symbol]
    core = _position_core(engine, symbol)
    mark = engine.mark(symbol)
    liq = pos.liquidation_price()
    return {
        **core,
        "unRealizedProfit": core.pop("unrealizedProfit"),
        "entryPrice": num(pos.entry),
        "breakEvenPrice": num(pos.entry),
        "markPrice": num(mark or ZERO),
        "liquidationPrice": num(liq) if liq is not None else "0",
        "marginAsset": pos.spec.settle,
        "positionInitialMargin": core["initialMargin"],
        "openOrderInitialMargin": num(engine.order_margin(symbol)),
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
        # v2 fields (ccxt's useV2 and the admin state read them).
        "leverage": str(int(pos.leverage)),
        "marginType": "isolated" if engine.margin_types[symbol] == "ISOLATED" else "cross",
        "isolated": engine.margin_types[symbol] == "ISOLATED",
        # COIN-M's: the position's value in BTC, and the largest position allowed.
        **(
            {"notionalValue": core["notional"], "maxQty": "1000000", "pair": _pair(symbol)}
            if pos.spec.inverse
            else {}
        ),
    }


def account_json(engine: FuturesEngine) -> Json:
    """``GET /fapi/v3/account`` (and v2): wallets and positions."""
    now = engine.now_ms()
    assets = []
    totals = {k: ZERO for k in ("wallet", "upnl", "im", "mm", "pim", "oim", "avail")}
    for asset, wallet in sorted(engine.wallets.items()):
        upnl = sum(
            (engine.unrealised(s) for s, p in engine.positions.items() if p.spec.settle == asset),
            ZERO,
        )
        pim = sum((p.margin for p in engine.positions.values() if p.spec.settle == asset), ZERO)
        oim = sum(
            (engine.order_margin(s) for s, p in engine.positions.items() if p.spec.settle == asset),
            ZERO,
        )
        mm = ZERO
        for s, p in engine.positions.items():
            mark = engine.mark(s)
            if p.spec.settle == asset and mark is not None:
                mm += p.maintenance(mark)
        avail = engine.available(asset)
        assets.append(
            {
                "asset": asset,
                "walletBalance": num(wallet),
                "unrealizedProfit": num(upnl),
                "marginBalance": num(wallet + upnl),
                "maintMargin": num(mm),
                "initialMargin": num(pim + oim),
                "positionInitialMargin": num(pim),
                "openOrderInitialMargin": num(oim),
                "crossWalletBalance": num(wallet - pim),
                "crossUnPnl": num(ZERO),
                "availableBalance": num(avail),
                "maxWithdrawAmount": num(avail),
                # ccxt skips assets whose updateTime is 0 (never used).
                "updateTime": now,
            }
        )
        for key, value in (
            ("wallet", wallet),
            ("upnl", upnl),
            ("im", pim + oim),
            ("mm", mm),
            ("pim", pim),
            ("oim", oim),
            ("avail", avail),
        ):
            totals[key] += value
    return {
        "totalInitialMargin": num(totals["im"]),
        "totalMaintMargin": num(totals["mm"]),
        "totalWalletBalance": num(totals["wallet"]),
        "totalUnrealizedProfit": num(totals["upnl"]),
        "totalMarginBalance": num(totals["wallet"] + totals["upnl"]),
        "totalPositionInitialMargin": num(totals["pim"]),
        "totalOpenOrderInitialMargin": num(totals["oim"]),
        "totalCrossWalletBalance": num(totals["wallet"] - totals["pim"]),
        "totalCrossUnPnl": num(ZERO),
        "availableBalance": num(totals["avail"]),
        "maxWithdrawAmount": num(totals["avail"]),
        "assets": assets,
        "positions": [
            _position_core(engine, s) for s, p in engine.positions.items() if p.contracts != 0
        ],
    }


def leverage_bracket_json(engine: FuturesEngine, symbol: str) -> Json:
    """``GET /fapi/v1/leverageBracket`` entry: one tier (the only one modelled)."""
    pos = engine.positions[symbol]
    # COIN-M's tiers are in contracts (v2: qtyCap/qtyFloor), USDⓈ-M's in notional.
    cap, floor = ("qtyCap", "qtyFloor") if pos.spec.inverse else ("notionalCap", "notionalFloor")
    return {
        "symbol": symbol,
        "notionalCoef": 1.0,
        "brackets": [
            {
                "bracket": 1,
                "initialLeverage": MAX_LEVERAGE,
                cap: 1_000_000_000,
                floor: 0,
                "maintMarginRatio": float(pos.mmr),
                "cum": 0.0,
            }
        ],
    }


def premium_index_json(engine: FuturesEngine, symbol: str, next_funding_ms: int) -> Json:
    """``GET /fapi/v1/premiumIndex``: the mark (the mid) and the funding terms."""
    mark = engine.mark(symbol) or ZERO
    return {
        "symbol": symbol,
        **({"pair": _pair(symbol)} if engine.positions[symbol].spec.inverse else {}),
        "markPrice": num(mark),
        "indexPrice": num(mark),
        "estimatedSettlePrice": num(mark),
        "lastFundingRate": num(engine.funding_rate),
        "interestRate": "0.00010000",
        "nextFundingTime": next_funding_ms,
        "time": engine.now_ms(),
    }


def income_json(row: Income) -> Json:
    return {
        "symbol": row.symbol,
        "incomeType": row.income_type,
        "income": num(row.income),
        "asset": row.asset,
        "info": row.income_type,
        "time": row.time_ms,
        "tranId": row.tran_id,
        "tradeId": "",
    }


# ----- streams ----------------------------------------------------------------------------
def depth_update(event: DepthDiff) -> Json:
    """A futures diff: spot's plus ``pu`` (the previous diff's ``u``) and ``T``."""
    return {**ws_wire.depth_update(event), "T": event.time_ms, "pu": event.first_id - 1}


def trade(event: PublicTrade) -> Json:
    """Spot's print less its best-match flag ``M``, plus the order type ``X``."""
    out = ws_wire.trade(event)
    del out["M"]
    out["X"] = "MARKET"
    return out


def order_trade_update(event: OrderChanged) -> Json:
    """One ``ORDER_TRADE_UPDATE`` (the order's own client id in ``c``, always)."""
    order, fill = event.order, event.trade
    o: Json = {
        "s": order.symbol,
        "c": order.client_order_id,
        "S": order.side,
        "o": order.type,
        "f": order.time_in_force,
        "q": num(order.orig_qty),
        "p": num(order.price),
        "ap": _avg(order),
        "sp": "0",
        "x": event.execution,
        "X": order.status,
        "i": order.order_id,
        "l": num(fill.qty) if fill else num(ZERO),
        "z": num(order.executed_qty),
        "L": num(fill.price) if fill else num(ZERO),
        "T": fill.time_ms if fill else event.time_ms,
        "t": fill.trade_id if fill else 0,
        "b": "0",
        "a": "0",
        "m": fill.is_maker if fill else False,
        "R": order.reduce_only,
        "wt": "CONTRACT_PRICE",
        "ot": order.type,
        "ps": "BOTH",
        "cp": False,
        "rp": num(fill.realized_pnl) if fill else num(ZERO),
        "pP": False,
        "si": 0,
        "ss": 0,
        "V": "EXPIRE_MAKER",
        "pm": "NONE",
        "gtd": 0,
    }
    if fill is not None:
        o["N"] = fill.commission_asset
        o["n"] = num(fill.commission)
    return {"e": "ORDER_TRADE_UPDATE", "E": event.time_ms, "T": event.time_ms, "o": o}


def account_update(event: AccountChanged) -> Json:
    return {
        "e": "ACCOUNT_UPDATE",
        "E": event.time_ms,
        "T": event.time_ms,
        "a": {
            "m": event.reason,
            "B": [
                {"a": asset, "wb": num(wallet), "cw": num(wallet), "bc": num(change)}
                for asset, wallet, change in event.balances
            ],
            "P": [
                {
                    "s": p.symbol,
                    "pa": num(p.amount),
                    "ep": num(p.entry),
                    "bep": num(p.entry),
                    "cr": num(p.realised),
                    "up": num(p.unrealised),
                    "mt": "isolated",
                    "iw": num(p.isolated_wallet),
                    "ps": "BOTH",
                }
                for p in event.positions
            ],
        },
    }
