"""Pieces of the depth-fracture detector; :mod:`bot.detector` puts them together."""
