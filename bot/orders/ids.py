"""Client order ids that mark an order as this bot's, and unique across restarts.

Format: ``{prefix}-{session}-{counter}``, e.g. ``bs1-m3k9q2xa7f-1b``:

- ``prefix``: per bot (configured); the ``-`` after it means prefix ``bs1`` never claims
  another bot's ``bs10-...`` orders.
- ``session``: the start time in ms (base 36) plus two random characters, so a
  restarted bot (whose counter starts again at 0) never reuses an id. Reuse would be
  dangerous: a lookup by client id could then return the *old* order.
- ``counter``: base 36, per session.

Every id matches Binance's ``newClientOrderId`` rule ``^[.A-Z:/a-z0-9_-]{1,36}$``,
which is also within what most other venues accept.
"""

from __future__ import annotations

import random
import re

from bot.clock import NS_PER_MS, Clock

MAX_CLIENT_ID_LEN = 36
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
PREFIX_RE = re.compile(r"^[A-Za-z0-9]{1,12}$")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(n: int) -> str:
    if n < 0:
        raise ValueError("base36 of a negative number")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if n == 0:
            return out


class ClientIdFactory:
    def __init__(
        self, prefix: str, *, clock: Clock, rng: random.Random, max_len: int = MAX_CLIENT_ID_LEN
    ) -> None:
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"client id prefix must match {PREFIX_RE.pattern}: {prefix!r}")
        self.prefix = prefix
        self._marker = prefix + "-"
        started_ms = clock.now_ns() // NS_PER_MS
        salt = "".join(rng.choice(_DIGITS) for _ in range(2))
        self._stem = f"{self._marker}{base36(started_ms)}{salt}-"
        self._max_len = max_len
        if len(self._stem) + 1 > max_len:
            raise ValueError(f"client id prefix {prefix!r} leaves no room within {max_len} chars")
        self._counter = 0

    def next(self) -> str:
        cid = self._stem + base36(self._counter)
        if len(cid) > self._max_len:
            # ~36**20 orders in one session with the default prefix: unreachable in
            # practice, but an over-long id would be refused by the venue.
            raise RuntimeError("client id counter exhausted; restart the bot")
        self._counter += 1
        return cid

    def is_ours(self, client_id: str | None) -> bool:
        """True for ids made by a bot with this prefix (this run or an earlier one)."""
        return bool(client_id) and str(client_id).startswith(self._marker)
