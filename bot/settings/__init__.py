"""The bot's settings: one frozen pydantic model tree, loaded by pydantic-settings.

Sources, highest priority first (nested tables merge key by key; lists replace whole):

1. command-line overrides (``load_settings(overrides=...)``, nested dicts),
2. ``BACKSTOP_*`` environment variables, nested with ``__`` (``BACKSTOP_FEED__SPEED=2``;
   lists and tables as JSON: ``BACKSTOP_MARKETS='[{"symbol": "ETH/USDT"}]'``),
3. a secrets directory (``secrets_dir=`` or ``BACKSTOP_SECRETS_DIR``): one file per value,
   named like the environment variable (``BACKSTOP_EXCHANGE__API_KEY``) or like the nested
   key (``exchange__api_key``); the Docker/Kubernetes way to hand over credentials,
4. the TOML config file (``--config``),
5. the defaults in :mod:`bot.settings.models`.

Exchange credentials are accepted only from 2 and 3: a config file gets committed and
copied around, and command-line arguments show up in ``ps`` and shell history.

Every mistake comes out as one :class:`bot.errors.ConfigError` whose message names where
the bad value came from (the file, ``environment variable BACKSTOP_...``, a secrets file
or ``command line``), the field (``markets[0].bands_bps``) and what is wrong. Secret
values never appear in messages or reprs.
"""

from bot.settings.loading import load_settings, validate_symbols
from bot.settings.models import (
    ControlSettings,
    ExchangeSettings,
    FeedSettings,
    JournalSettings,
    KillSwitchSettings,
    LoggingSettings,
    MarketSettings,
    ReserveSettings,
    RiskSettings,
    Settings,
)

__all__ = [
    "ControlSettings",
    "ExchangeSettings",
    "FeedSettings",
    "JournalSettings",
    "KillSwitchSettings",
    "LoggingSettings",
    "MarketSettings",
    "ReserveSettings",
    "RiskSettings",
    "Settings",
    "load_settings",
    "validate_symbols",
]
