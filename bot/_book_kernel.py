"""Which level store backs :class:`bot.book.OrderBook`: compiled, or pure numpy.

``bot._bookc`` (``bot/_bookc.c``, built by ``pip install``) keeps both sides of the
book in C arrays and answers the hot queries in one C call each; ``bot._book_numpy``
is the pure-numpy implementation of the same interface, kept as the fallback and as
the reference the compiled one is tested against (``tests/test_book_kernel.py``).

The compiled store is used when it imports, unless ``BACKSTOP_PURE_BOOK=1``. Each
book picks its store when it is created, so :func:`using` switches the books created
inside it (the benchmark and the tests run both side by side).

Stores speak in small integer result codes instead of :class:`bot.book.Drop`, so the
compiled store needs no Python objects to say why it refused an input.

The early warning's feature arithmetic (:class:`bot.warning.features.FeatureTracker`)
follows the same choice: :func:`feature_state` gives a tracker created under the
compiled kernel its compiled state, and the tracker runs its Python reference without.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from bot.feeds.events import Trade

__all__ = [
    "COMPILED_AVAILABLE",
    "PURE_ENV",
    "DepthRows",
    "FeatureState",
    "Kernel",
    "LevelStore",
    "PairRows",
    "SampleResult",
    "TopFlow",
    "depth_rows",
    "feature_state",
    "kernel",
    "new_store",
    "pair_rows",
    "top_flow",
    "use",
    "using",
]

FloatArray = npt.NDArray[np.float64]
Kernel = Literal["compiled", "pure"]

SampleResult = tuple[float, float, float, float, FloatArray, float | None, float | None]
"""``(bid, ask, mid, spread_bps, depth, buy_slippage_bps, sell_slippage_bps)``: one
:class:`bot.monitor.DepthSample`'s measurements (``LevelStore.sample``)."""

PURE_ENV: Final = "BACKSTOP_PURE_BOOK"

# Result codes of LevelStore.snapshot / delta (bot/_bookc.c uses the same numbers).
OK: Final = 0
NON_FINITE: Final = 1
NEGATIVE: Final = 2
CROSSED: Final = 3
MALFORMED: Final = 4
CONVERT: Final = 5
"""The input is not a 2-D float64 buffer: convert it with ``_as_levels`` and retry."""


class LevelStore(Protocol):
    """Both sides of one book. ``side`` is 0 for bids, 1 for asks.

    ``snapshot`` and ``delta`` are all or nothing: a non-zero code leaves the levels
    as they were. Queries assume nothing about the book's state (the caller answers
    "nothing" for books that are not VALID); an empty side has no mid, so band queries
    answer zeros.
    """

    def snapshot(self, bids: FloatArray, asks: FloatArray, /) -> int: ...

    def delta(self, bids: object, asks: object, /) -> int: ...

    def best_bid(self) -> float | None: ...

    def best_ask(self) -> float | None: ...

    def mid(self) -> float | None: ...

    def spread_bps(self) -> float | None: ...

    def count(self, side: int, /) -> int: ...

    def depth(self, side: int, bps: float, /) -> tuple[float, float, int]: ...

    def bands(self, bands_bps: Sequence[float], out: FloatArray, /) -> None:
        """Fill ``out`` (C-contiguous, ``(2, len(bands_bps), 2)``)."""

    def top(self, side: int, out: FloatArray, /) -> None:
        """Fill ``out`` (C-contiguous, ``(k <= count(side), 2)``) best first."""

    def size_at(self, side: int, price: float, /) -> float:
        """The size of the level at exactly ``price`` on ``side``, 0.0 if there is none."""

    def fill(self, side: int, notional: float, /) -> tuple[float, float, float, bool]:
        """``(filled_quote, filled_base, worst_price, complete)`` for a non-empty side
        and a notional > 0."""

    def sample(
        self, bands_bps: Sequence[float], notional: float, out: FloatArray, /
    ) -> SampleResult | None:
        """The depth monitor's reading in one call: None when a side is empty, else
        ``(bid, ask, mid, spread_bps, out, buy, sell)`` with ``out`` filled as ``bands``
        fills it, ``mid = (ask + bid) / 2.0``, ``spread_bps = (ask - bid) / mid * 1e4``
        and each slippage what ``OrderBook.fill_slippage_bps`` gives for ``notional``
        on that side (buy: the asks), the same operations in the same order, so the
        same bits. Raises ``ValueError`` for a non-finite or negative ``notional``
        (after filling ``out``)."""


FlowResult = tuple[float, float, float, float, float, float]


class TopFlow(Protocol):
    """``top_flow(prev_bids, prev_asks, bids, asks)`` -> ``(bid size, ask size, removed
    bid, added bid, removed ask, added ask)`` of the best levels (the early warning's
    cancel/add flow; ``bot._book_numpy.top_flow`` defines it)."""

    def __call__(
        self, prev_bids: FloatArray, prev_asks: FloatArray, bids: FloatArray, asks: FloatArray, /
    ) -> FlowResult: ...


class FeatureState(Protocol):
    """One :class:`bot.warning.features.FeatureTracker`'s state and arithmetic, compiled
    (``bot._bookc.Features``): its ``update`` takes the reading's fields and the best
    levels and gives the Python method's vector, bit for bit
    (``tests/test_calm_paths.py``)."""

    last_ns: int | None

    def on_trade(self, trade: Trade, /) -> None: ...

    def update(
        self,
        ts_ns: int,
        ratio: tuple[float | None, float | None],
        baseline_ready: bool,
        depth: FloatArray,
        mid: float,
        spread_bps: float,
        bids: FloatArray,
        asks: FloatArray,
        fracture_ratio: float,
        /,
    ) -> list[float]: ...


DepthRows = Callable[[bytes, int, int], tuple[bytearray, bytearray] | None]
"""``depth_rows(text, start, stop)``: a depth message's price levels (see bot/_bookc.c)."""

PairRows = Callable[[list[object], int], bytearray | None]
"""``pair_rows(side, limit)``: a ccxt order book side's first rows (see bot/_bookc.c)."""

try:
    from bot._bookc import Levels as _Compiled
    from bot._bookc import depth_rows as _compiled_depth_rows
    from bot._bookc import pair_rows as _compiled_pair_rows
    from bot._bookc import top_flow as _compiled_top_flow
except ImportError:  # not built: a source tree used without `pip install`
    _compiled: type[LevelStore] | None = None
    _compiled_flow: TopFlow | None = None
    _depth_rows: DepthRows | None = None
    _pair_rows: PairRows | None = None
else:
    _compiled = _Compiled
    _compiled_flow = _compiled_top_flow
    _depth_rows = _compiled_depth_rows
    _pair_rows = _compiled_pair_rows

try:
    from bot._bookc import Features as _CompiledFeatures
except ImportError:  # not built, or built before Features: the book kernel stays compiled
    _compiled_features: type[FeatureState] | None = None
else:
    _compiled_features = _CompiledFeatures

COMPILED_AVAILABLE: Final = _compiled is not None


def _default() -> Kernel:
    if os.environ.get(PURE_ENV, "") not in ("", "0") or _compiled is None:
        return "pure"
    return "compiled"


_kernel: Kernel = _default()


def kernel() -> Kernel:
    """The store that new books get."""
    return _kernel


def use(name: Kernel) -> Kernel:
    """Make new books use ``name``; returns the previous choice."""
    global _kernel
    if name == "compiled" and _compiled is None:
        raise RuntimeError("bot._bookc is not built: reinstall the package (pip install -e .)")
    if name not in ("compiled", "pure"):
        raise ValueError(f"unknown book kernel {name!r}")
    previous, _kernel = _kernel, name
    return previous


@contextmanager
def using(name: Kernel) -> Iterator[None]:
    """Books created inside the block use ``name``."""
    previous = use(name)
    try:
        yield
    finally:
        use(previous)


def new_store() -> tuple[Kernel, LevelStore]:
    if _kernel == "compiled" and _compiled is not None:
        return "compiled", _compiled()
    from bot._book_numpy import NumpyLevels  # imports this module: no cycle at load time

    return "pure", NumpyLevels()


def top_flow() -> TopFlow:
    """The top-level flow function of the kernel new books get (both give the same
    bits; ``tests/test_calm_paths.py`` holds them to it)."""
    if _kernel == "compiled" and _compiled_flow is not None:
        return _compiled_flow
    from bot._book_numpy import top_flow as pure

    return pure


def feature_state() -> FeatureState | None:
    """A new compiled feature state for a tracker created now, None under the pure
    kernel (or when the package is not built): the tracker then runs its Python."""
    if _kernel == "compiled" and _compiled_features is not None:
        return _compiled_features()
    return None


def depth_rows() -> DepthRows | None:
    """The compiled depth-level reader for the Binance parser, None when the package is
    not built or ``BACKSTOP_PURE_BOOK`` asks for the pure path (read at the caller's
    import; the general path gives the same arrays)."""
    return None if _default() == "pure" else _depth_rows


def pair_rows() -> PairRows | None:
    """The compiled copier of a ccxt order book side for the live feed, None when the
    package is not built or ``BACKSTOP_PURE_BOOK`` asks for the pure path (the general
    path, numpy's conversion, gives the same arrays)."""
    return None if _default() == "pure" else _pair_rows
