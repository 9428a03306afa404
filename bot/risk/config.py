"""Risk configuration: the ``[risk]`` section (with ``[risk.guards]``) of the settings tree.

Defined with the other settings models (one tree, one loader); re-exported here so the
risk package reads as self-contained.
"""

from bot.settings.models import GuardSettings, RiskSettings

__all__ = ["GuardSettings", "RiskSettings"]
