"""Commands keys init, sign and verify (being built in the signatures issue)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    _ = (sub, argparse)
