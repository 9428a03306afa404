"""Venues: where orders go. A real ccxt.pro exchange, or the paper venue on a real book."""
