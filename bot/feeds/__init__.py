"""Market data: live (ccxt.pro websockets with REST fallback) and replay of recordings."""
