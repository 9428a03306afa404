"""Governance: the intervention policy, control-API roles, approvals and verification.

- :mod:`bot.governance.policy`: the policy file (activation criteria, scope, quoting
  limits, replenishment), its hash, and how it maps onto the settings.
- :mod:`bot.governance.gate`: :class:`GovernedStrategy`, the backstop under a policy
  (scope, episode duration and reserve caps).
- :mod:`bot.governance.roles`: viewer / operator / admin tokens for the control API.
- :mod:`bot.governance.approvals`: the two-person rule for resuming after a loss kill.
- :mod:`bot.governance.evidence`: journals the market data behind every decision.
- :mod:`bot.governance.replay`: ``backstop audit replay EPISODE``.
- :mod:`bot.governance.report`: ``backstop report --governance``.
- :mod:`bot.governance.runtime`: the daemon's side (policy changes, resume approvals).

Nothing is imported here: ``backstop audit`` and ``backstop report`` load only what
they use.
"""
