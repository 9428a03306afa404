"""backstop: a liquidity-backstop bot for crypto order books."""

__version__ = "0.1.0"
