"""Strategies decide; they never talk to an exchange directly."""
