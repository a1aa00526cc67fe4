"""What the command-line programs share: logging set-up, usage errors and tables."""

from __future__ import annotations

import logging
import os
import sys

from .settings import Settings


def setup_logging(settings: Settings | None = None) -> None:
    """Log to stderr at ``III_LOG_LEVEL``; Kombu and py-amqp only from warnings up."""
    level = (settings.log_level if settings else os.environ.get("III_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = 1, prog: str = "iii-broker") -> int:
    """Print ``prog: message`` to stderr; returns ``code`` (the exit status)."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
