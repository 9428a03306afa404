"""Early warning: predict a depth fracture seconds before the detector sees it.

Features computed online on every book update (:mod:`bot.warning.features`), a small
logistic-regression model shipped as a versioned file (:mod:`bot.warning.model`), the
alarm rule (:mod:`bot.warning.alarm`), the bot's per-market tracker and the pre-arm
policy (:mod:`bot.warning.live`), and the training and evaluation behind ``backstop
model`` (:mod:`bot.warning.dataset`, :mod:`bot.warning.evaluate`,
:mod:`bot.warning.train`, :mod:`bot.warning.cli`). See docs/early-warning.md.
"""
