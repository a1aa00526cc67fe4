"""``iii-broker logs`` and ``iii-broker invocations`` (STUB)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ...settings import Settings


def commands(sub: argparse._SubParsersAction[Any]
             ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
    return {}
