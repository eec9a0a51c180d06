"""The README's conformance tables are exactly what scripts/conformance.py prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- conformance:begin -->\n", "\n<!-- conformance:end -->"


def test_readme_holds_the_generated_conformance_tables() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(BEGIN) + len(BEGIN)
    written = readme[start : readme.index(END, start)]
    printed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "conformance.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.rstrip("\n")
    assert written == printed, "run: python scripts/conformance.py and paste it into README.md"
