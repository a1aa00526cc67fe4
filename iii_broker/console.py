"""What the command-line programs share: logging set-up, usage errors and tables."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn

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


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors as ``iii-broker: message`` (the program's name, not the
    subcommand's), like every other error of the command-line programs."""

    def __init__(self, *args: Any, root: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.root = root or self.prog.split()[0]

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", lambda **kw: ArgumentParser(root=self.root, **kw))
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.root}: {message}\n")


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
