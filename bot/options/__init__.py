"""Option books: a synthetic chain (or live books), vega-depth fracture detection, greek
limits, option paper trading with expiry settlement, and delta hedging on the perpetual.

See ``docs/options.md``. Modules import lazily from each other; this package's
``__init__`` stays empty so :mod:`bot.settings` can import :mod:`bot.options.settings`.
"""
