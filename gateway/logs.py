"""structlog set-up: readable in a terminal, JSON lines under systemd or in files."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    # Resolve sys.stderr at each use, not once: it may be replaced (tests capture it).
    return structlog.PrintLogger(sys.stderr)


def configure(level: str = "info", fmt: Literal["auto", "console", "json"] = "auto") -> None:
    # Plain tracebacks whatever is installed: the same output on a box as in a development venv that
    # has rich (which gateway/__init__.py keeps structlog from importing).
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging; keep them quiet unless asked.
    logging.basicConfig(level=logging.WARNING if level != "debug" else logging.DEBUG, stream=sys.stderr)
    for noisy in ("pymodbus", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.ERROR if level != "debug" else logging.DEBUG)
