"""The intervention policy: its file, its hash, what it owns in the settings, the gate it
puts around the backstop, and the detector state an episode's evidence starts from."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest

from bot.detect.config import DetectorConfig
from bot.detector import DetectorState, FractureDetector
from bot.errors import ConfigError
from bot.feeds.events import Trade
from bot.governance import snapshot
from bot.governance.detectors import checkpoint, detector_config, reconfigure, restore
from bot.governance.gate import GovernedStrategy
from bot.governance.policy import (
    ACTIVATION_FIELDS,
    QUOTING_FIELDS,
    REPLENISHMENT_FIELDS,
    implicit_policy,
    load_policy_file,
    parse_policy,
    policy_of,
)
from bot.monitor import DepthSample
from bot.settings import load_settings
from bot.settings.models import BackstopParams, MarketSettings
from strategies.backstop import BackstopStrategy
from strategies.base import MarketContext
from tests.strategy_helpers import (
    RULES,
    SYMBOL,
    book,
    budget_view,
    detector_update,
    inventory_view,
    sample_of,
)

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
EXAMPLE = REPO / "config" / "policies" / "example.toml"
NS = 1_000_000_000

MINIMAL = '[scope]\nmarkets = ["BTC/USDT"]\n'


def scoped(extra: str) -> str:
    """The minimal policy with more ``[scope]`` keys."""
    return MINIMAL + extra


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the file


def test_the_hash_is_the_policys_substance_not_its_layout() -> None:
    plain = parse_policy(MINIMAL, origin="a")
    commented = parse_policy(
        '# agreed 2024-08-01\n[scope]\nmarkets = [ "BTC/USDT" ]  # only this\n'
        "[activation]\nbaseline_fraction = 0.3\n",  # the default, written out
        origin="b",
    )
    changed = parse_policy(MINIMAL + "[activation]\nbaseline_fraction = 0.25\n", origin="c")
    assert plain.digest() == commented.digest()
    assert len(plain.digest()) == 64
    assert changed.digest() != plain.digest()
    # The normalised policy states every rule, defaults included.
    assert plain.canonical()["activation"]["recovery_fraction"] == 0.6
    assert plain.canonical()["quoting"]["levels"] == 3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[activation]\nbaseline_fraction = 0.3\n", "scope: required key is missing"),
        (
            MINIMAL + "[activation]\nbaseline_fractoin = 0.3\n",
            "activation.baseline_fractoin: unknown",
        ),
        (
            MINIMAL + "[activation]\nbaseline_fraction = 0.7\n",
            "recovery_fraction: must be above baseline_fraction",
        ),
        (MINIMAL + "[quoting]\nlevels = 0\n", "quoting.levels"),
        (MINIMAL + '[replenishment]\nmode = "always"\n', "replenishment.mode"),
        ('[scope]\nmarkets = ["BTCUSDT"]\n', "not a ccxt unified symbol"),
        ('[scope]\nmarkets = ["BTC/USDT"\n', "TOML syntax error"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_key(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_policy(text, origin="policy.toml")
    assert "policy.toml" in str(e.value)
    assert fragment in str(e.value)


def test_policy_sections_mirror_the_settings_they_own() -> None:
    # A renamed or new setting must not silently escape the policy.
    assert set(ACTIVATION_FIELDS) <= set(MarketSettings.model_fields)
    owned = set(QUOTING_FIELDS) | set(REPLENISHMENT_FIELDS.values())
    assert owned == set(BackstopParams.model_fields)


def test_per_market_activation_overrides_inherit_the_rest() -> None:
    policy = parse_policy(
        '[scope]\nmarkets = ["BTC/USDT", "ETH/USDT"]\n'
        "[activation]\nbaseline_fraction = 0.25\n"
        '[markets."ETH/USDT".activation]\ndepth_floor_quote = 20000\n',
        origin="p",
    )
    eth = policy.activation_for("ETH/USDT")
    assert eth["depth_floor_quote"] == 20000
    assert eth["baseline_fraction"] == 0.25
    assert policy.activation_for("BTC/USDT")["depth_floor_quote"] == 0


# --------------------------------------------------------------------------- settings


def test_the_policy_fills_in_what_the_config_leaves_out(tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.toml",
        MINIMAL + "[activation]\nbaseline_fraction = 0.25\n[quoting]\nlevels = 2\n"
        '[replenishment]\nmode = "off"\n',
    )
    s = load_settings(env={}, overrides={"governance": {"policy_file": policy}})
    assert s.markets[0].baseline_fraction == 0.25
    assert s.strategy.backstop.levels == 2
    assert s.strategy.backstop.replenish == "off"
    loaded = policy_of(s)
    assert loaded.source == str(policy)
    assert loaded.hash == load_policy_file(policy).hash


def test_the_example_policy_runs_with_the_paper_config() -> None:
    s = load_settings(PAPER, env={}, overrides={"governance": {"policy_file": EXAMPLE}})
    policy = policy_of(s)
    assert policy.policy.scope.max_reserve_quote_per_episode == 50_000
    # paper.toml repeats the same values: no conflict, nothing changed.
    plain = load_settings(PAPER, env={})
    assert s.markets == plain.markets
    assert s.strategy == plain.strategy


def test_a_config_that_contradicts_the_policy_is_refused_naming_both(tmp_path: Path) -> None:
    looser = write(
        tmp_path / "p.toml",
        EXAMPLE.read_text().replace("baseline_fraction = 0.3", "baseline_fraction = 0.2"),
    )
    with pytest.raises(ConfigError) as e:
        load_settings(PAPER, env={}, overrides={"governance": {"policy_file": looser}})
    message = str(e.value)
    assert message.startswith(f"{PAPER}: markets[0].baseline_fraction = 0.3")
    assert f"the policy {looser}" in message
    assert "says 0.2" in message
    # The same through the environment names the variable.
    with pytest.raises(ConfigError, match=r"environment variable BACKSTOP_STRATEGY.*levels = 5"):
        load_settings(
            env={
                "BACKSTOP_GOVERNANCE__POLICY_FILE": str(EXAMPLE),
                "BACKSTOP_STRATEGY__BACKSTOP__LEVELS": "5",
            }
        )


def test_the_market_maker_cannot_run_under_a_policy() -> None:
    with pytest.raises(ConfigError, match="governs the backstop strategy"):
        load_settings(
            env={},
            overrides={
                "governance": {"policy_file": EXAMPLE},
                "strategy": {"name": "market-maker"},
            },
        )


def test_without_a_file_the_settings_are_the_implicit_policy() -> None:
    s = load_settings(PAPER, env={})
    implicit = implicit_policy(s)
    assert implicit.implicit
    assert implicit.policy.scope.markets == ["BTC/USDT"]
    assert implicit.policy.backstop_params() == s.strategy.backstop
    # Same rules as the example file except the example's scope caps and name.
    example = load_policy_file(EXAMPLE).policy
    assert implicit.policy.activation == example.activation
    assert implicit.policy.quoting == example.quoting


def test_tokens_never_come_from_the_config_file(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "c.toml", '[control]\ntokens = { "admin.alice" = "x' + "y" * 30 + '" }\n'
    )
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={})
    assert "control.tokens: credentials must not be in the config file" in str(e.value)
    assert "yyyy" not in str(e.value)
    with pytest.raises(ConfigError, match=r"ROLE\.NAME"):
        load_settings(env={"BACKSTOP_CONTROL__TOKENS": '{"root": "' + "z" * 32 + '"}'})


# --------------------------------------------------------------------------- the gate


def _ctx(
    update_state: DetectorState, *, net_base: float = 0.0, engaged_since_s: float = 10.0
) -> MarketContext:
    ob = book()
    update = dataclasses.replace(
        detector_update(update_state, ts_ns=100 * NS),
        engaged_since_ns=round(engaged_since_s * NS) if update_state.active else None,
    )
    return MarketContext(
        symbol=SYMBOL,
        ts_ns=100 * NS,
        book=ob,
        sample=sample_of(ob, 100 * NS),
        detector=update,
        inventory=inventory_view(net_base),
        budget=budget_view(quote_room=40_000.0, max_order_quote=10_000.0),
        rules=RULES,
    )


def test_the_gate_keeps_the_backstop_within_the_policys_scope() -> None:
    base = parse_policy(MINIMAL, origin="p")
    ctx = _ctx(DetectorState.ENGAGED)
    free = GovernedStrategy(base).decide(ctx)
    assert free.quotes == BackstopStrategy(base.backstop_params()).decide(ctx).quotes
    assert free.quotes

    other = parse_policy('[scope]\nmarkets = ["ETH/USDT"]\n', origin="p")
    out = GovernedStrategy(other).decide(ctx)
    assert out.quotes == ()
    assert "outside the policy's scope" in out.reason

    short = parse_policy(scoped("max_episode_s = 60\n"), origin="p")
    assert GovernedStrategy(short).decide(_ctx(DetectorState.ENGAGED, engaged_since_s=50)).quotes
    late = GovernedStrategy(short).decide(_ctx(DetectorState.ENGAGED, engaged_since_s=30))
    assert late.quotes == ()
    assert "max_episode_s=60" in late.reason

    capped = parse_policy(scoped("max_reserve_quote_per_episode = 20000\n"), origin="p")
    held = 0.2  # BTC already bought in this episode: 12,000 of the 20,000 at risk
    out = GovernedStrategy(capped).decide(_ctx(DetectorState.ENGAGED, net_base=held))
    notional = sum(q.price * q.amount for q in out.quotes)
    assert out.quotes
    assert notional + held * ctx.sample.mid <= 20_000 * (1 + 1e-9)
    assert sum(q.price * q.amount for q in free.quotes) > 20_000


def test_the_cap_does_not_block_replenishment_after_the_episode() -> None:
    capped = parse_policy(scoped("max_reserve_quote_per_episode = 1000\n"), origin="p")
    out = GovernedStrategy(capped).decide(_ctx(DetectorState.CALM, net_base=0.5))
    assert out.mode == "replenish"
    assert out.quotes


# --------------------------------------------------------------------------- the detector


def _samples(n: int, seed: int) -> list[DepthSample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        d = 1_000_000.0 * (0.2 if 400 <= i < 700 else 1.0) * (1 + 0.2 * rng.random())
        depth = np.array([[[d / 1e5, d]], [[d / 1e5, d * 1.1]]])
        out.append(
            DepthSample(
                i * 100_000_000,
                99.99,
                100.01,
                100.0 + rng.random() / 10,
                0.2,
                (10.0,),
                depth,
                None,
                None,
            )
        )
    return out


def _config() -> DetectorConfig:
    return DetectorConfig(
        band_bps=10.0,
        baseline_window_s=20.0,
        warmup_s=20.0,
        max_depth_drop_per_s=0.5,
        vol_trade_weight=0.5,
    )


def test_a_restored_checkpoint_continues_exactly_like_the_original() -> None:
    samples = _samples(1000, 7)
    original = FractureDetector(_config())
    for i, s in enumerate(samples[:450]):
        original.on_trade(Trade(SYMBOL, s.ts_ns, 100.0 + i % 3, 0.1, "buy", str(i)))
        original.update(s, (1000.0, 0.0))
    state = checkpoint(original)
    assert original.state is DetectorState.ENGAGED  # mid-episode: baselines, dwell, triggers
    copy = restore(json.loads(json.dumps(state)), _config())
    rest = [(original.update(s, (0.0, 0.0)), copy.update(s, (0.0, 0.0))) for s in samples[450:]]
    assert [a for a, _ in rest] == [b for _, b in rest]
    assert any(a.transition is not None for a, _ in rest)


def test_snapshots_only_rebuild_detector_and_strategy_classes() -> None:
    evil = {"$o": "os:system", "f": {}}
    with pytest.raises(snapshot.SnapshotError, match="refusing to load"):
        snapshot.load(evil)
    with pytest.raises(snapshot.SnapshotError, match="not snapshottable"):
        snapshot.dump(Path("x"))


def test_new_activation_criteria_apply_to_a_running_detector_without_losing_its_baseline() -> None:
    policy = parse_policy(MINIMAL, origin="p")
    cfg = detector_config(DetectorConfig.from_market(MarketSettings(symbol=SYMBOL)), policy, SYMBOL)
    assert cfg == DetectorConfig.from_market(MarketSettings(symbol=SYMBOL))
    samples = _samples(1000, 3)
    live = FractureDetector(dataclasses.replace(cfg, baseline_window_s=20, warmup_s=20))
    for s in samples[:300]:
        live.update(s)
    baseline = live.update(samples[300]).baseline
    stricter = parse_policy(
        MINIMAL + "[activation]\nbaseline_fraction = 0.95\nrecovery_fraction = 0.99\n"
        "baseline_window_s = 20\nengage_dwell_s = 0\n",
        origin="p",
    )
    reconfigure(live, detector_config(live.config, stricter, SYMBOL))
    after = live.update(samples[301])
    assert after.baseline[0] == pytest.approx(baseline[0], rel=0.05)  # still learnt, not reset
    assert live.config.baseline_fraction == 0.95
    assert live.machine.engage_dwell_ns == 0
    # Depth at ~0.9 of baseline is now a fracture, engaged at once (no dwell).
    thin = dataclasses.replace(samples[302], depth=samples[302].depth * 0.5)
    assert live.update(thin).state is DetectorState.ENGAGED
