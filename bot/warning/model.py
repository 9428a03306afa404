"""The early-warning model file: a logistic regression, read and scored with numpy.

Training (:mod:`bot.warning.train`) uses scikit-learn; scoring does not, so the bot
never imports it. The file is JSON (small, diffable, versioned by ``version``) and
holds everything inference needs -- feature names in order, clip bounds, standard
scaler, weights, alarm threshold -- and what it was trained on and how it scored
(``training``, ``eval``), so ``backstop model eval`` can repeat the held-out numbers.

Scoring one update: clip each feature to the training range (a value never seen in
training must not extrapolate the logit without bound), standardise, dot, logistic.
The scaler is folded into the weights at load; one vector is scored with plain floats
(about 1 us), a batch (training, evaluation) with numpy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bot.errors import UserError
from bot.warning.features import FEATURES

FloatArray = npt.NDArray[np.float64]

FORMAT: Final = "backstop-early-warning"
VERSION: Final = 1
SHIPPED_MODEL: Final = "early_warning_v1.json"
"""The model bundled in ``bot/data`` (trained by ``backstop model train``; see
docs/early-warning.md for the command and its numbers)."""


def shipped_model_path() -> Path:
    res = resources.files("bot") / "data" / SHIPPED_MODEL
    if not isinstance(res, Path):  # pragma: no cover - only for zipped installs
        raise UserError(f"bundled model {SHIPPED_MODEL} is not a plain file ({res}); reinstall")
    return res


@dataclass(frozen=True)
class WarningModel:
    """A trained early-warning model. ``probability(x)`` for one feature vector."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    clip_lo: tuple[float, ...]
    clip_hi: tuple[float, ...]
    coef: tuple[float, ...]
    """Weights on the standardised features (comparable across features)."""
    intercept: float
    threshold: float
    """Alarm when the probability reaches this (chosen on the training runs)."""
    horizon_s: float
    """What the probability is about: a fracture starting within this many seconds."""
    alarm_hold_s: float = 1.0
    """An alarm stays up until the probability has been under the threshold this long."""
    name: str = "early-warning"
    training: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    detector: dict[str, Any] = field(default_factory=dict)
    """The detector config the labels came from (its fracture definition)."""
    _w: FloatArray = field(init=False, repr=False, compare=False)
    _b: float = field(init=False, repr=False, compare=False)
    _lo: FloatArray = field(init=False, repr=False, compare=False)
    _hi: FloatArray = field(init=False, repr=False, compare=False)
    _terms: tuple[tuple[int, float, float, float], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        n = len(self.features)
        for name in ("mean", "scale", "clip_lo", "clip_hi", "coef"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"model: {name} has {len(getattr(self, name))} values, not {n}")
        if self.features != FEATURES:
            raise ValueError(
                "model: its features are not the ones this version computes "
                f"(model: {list(self.features)}; here: {list(FEATURES)}); retrain it"
            )
        coef = np.asarray(self.coef, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        mean = np.asarray(self.mean, dtype=np.float64)
        w = coef / scale
        object.__setattr__(self, "_w", w)
        object.__setattr__(self, "_b", float(self.intercept - w @ mean))
        object.__setattr__(self, "_lo", np.asarray(self.clip_lo, dtype=np.float64))
        object.__setattr__(self, "_hi", np.asarray(self.clip_hi, dtype=np.float64))
        bounds = zip(w.tolist(), self.clip_lo, self.clip_hi, strict=True)
        terms = tuple((i, wi, lo, hi) for i, (wi, lo, hi) in enumerate(bounds) if wi != 0.0)
        object.__setattr__(self, "_terms", terms)

    # ------------------------------------------------------------------ scoring

    def logit(self, x: list[float]) -> float:
        # Plain floats over the scored features: for one vector of ~20 values this is
        # ~1 us, where list -> array -> clip -> dot costs ~7 us of numpy call overhead.
        z = self._b
        for i, w, lo, hi in self._terms:
            v = x[i]
            z += w * (lo if v < lo else hi if v > hi else v)
        return z

    def probability(self, x: list[float]) -> float:
        z = self.logit(x)
        if z < -700.0:
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))

    def probabilities(self, rows: FloatArray) -> FloatArray:
        """Vectorised :meth:`probability` for an ``(n, features)`` array (training, eval)."""
        z = np.clip(rows, self._lo, self._hi) @ self._w + self._b
        out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(z, -700.0, 700.0)))
        return out

    def contributions(self, x: list[float]) -> list[tuple[str, float, float]]:
        """(feature, value, contribution to the logit against the training mean),
        largest push toward an alarm first: why the model says what it says."""
        v = np.clip(x, self._lo, self._hi)
        contrib = (self._w * (v - np.asarray(self.mean))).tolist()
        values: list[float] = np.asarray(x, dtype=np.float64).tolist()
        rows = list(zip(self.features, values, contrib, strict=True))
        return sorted(rows, key=lambda r: -r[2])

    # ------------------------------------------------------------------ file

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "model": "logistic-regression",
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "clip_lo": list(self.clip_lo),
            "clip_hi": list(self.clip_hi),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
            "horizon_s": self.horizon_s,
            "alarm_hold_s": self.alarm_hold_s,
            "detector": self.detector,
            "training": self.training,
            "eval": self.eval,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WarningModel:
        if data.get("format") != FORMAT:
            raise ValueError(f"not an early-warning model (format {data.get('format')!r})")
        if data.get("version") != VERSION:
            version = data.get("version")
            raise ValueError(f"model file version {version!r}; this bot reads {VERSION}")

        def floats(key: str) -> tuple[float, ...]:
            return tuple(float(v) for v in data[key])

        return cls(
            features=tuple(str(f) for f in data["features"]),
            mean=floats("mean"),
            scale=floats("scale"),
            clip_lo=floats("clip_lo"),
            clip_hi=floats("clip_hi"),
            coef=floats("coef"),
            intercept=float(data["intercept"]),
            threshold=float(data["threshold"]),
            horizon_s=float(data["horizon_s"]),
            alarm_hold_s=float(data.get("alarm_hold_s", 1.0)),
            name=str(data.get("name", "early-warning")),
            training=dict(data.get("training") or {}),
            eval=dict(data.get("eval") or {}),
            detector=dict(data.get("detector") or {}),
        )

    @classmethod
    def load(cls, path: Path | None = None) -> WarningModel:
        """The model at ``path`` (None: the shipped one). Raises :class:`UserError`."""
        path = shipped_model_path() if path is None else path
        try:
            data = json.loads(path.read_text())
            return cls.from_dict(data)
        except FileNotFoundError:
            raise UserError(f"early-warning model {path}: no such file") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"early-warning model {path}: {e}") from None
