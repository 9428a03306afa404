"""Structured logging: JSON lines for daemons and log shippers, readable lines in a terminal.

The logger is built and passed down (never configured globally), so two engines in one
process (tests, the emulator beside the bot) do not fight over a shared config.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

Logger = FilteringBoundLogger


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "console"]:
    """``auto`` means console for a human at a terminal, JSON for everything else."""
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "json"


def make_logger(
    fmt: LogFormat = "auto", level: LogLevel = "info", stream: TextIO | None = None
) -> Logger:
    out = stream if stream is not None else sys.stderr
    resolved = resolve_format(fmt, out)
    processors: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if resolved == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    logger: Logger = structlog.wrap_logger(
        structlog.PrintLogger(file=out),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        cache_logger_on_first_use=True,
    )
    return logger


def null_logger() -> Logger:
    """A logger that drops everything (tests and benchmarks): ReturnLogger prints nothing."""
    logger: Logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[],
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
    )
    return logger
