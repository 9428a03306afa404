"""Order manager configuration: the ``[orders]`` section of the settings tree.

Defined with the other settings models (one tree, one loader); re-exported here so the
order manager's package reads as self-contained.
"""

from bot.settings.models import OrderManagerConfig

__all__ = ["OrderManagerConfig"]
