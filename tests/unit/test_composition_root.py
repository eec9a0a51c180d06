"""Process-wide settings belong to the composition root (cli/main.py and app.py) alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

IMPORT_EVERYTHING = textwrap.dedent(
    """
    import importlib, os, pkgutil, sys
    before = dict(os.environ)
    import node
    for info in pkgutil.walk_packages(node.__path__, "node."):
        if info.name == "node.__main__":
            continue
        importlib.import_module(info.name)
    changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
    print(",".join(changed))
    """
)


def _run(code: str) -> str:
    env = {"PATH": "/usr/bin:/bin"}  # no OPENBLAS_NUM_THREADS inherited from the test run
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def test_importing_any_module_leaves_the_environment_alone() -> None:
    assert _run(IMPORT_EVERYTHING) == ""


def test_the_command_line_sets_the_environment_before_numpy_loads() -> None:
    code = textwrap.dedent(
        """
        import os, sys
        from node.cli.main import main
        assert "numpy" not in sys.modules
        try:
            main(["--version"])
        except SystemExit:
            pass
        assert "numpy" in sys.modules
        print(os.environ.get("OPENBLAS_NUM_THREADS"))
        """
    )
    assert _run(code).splitlines()[-1] == "1"


def test_every_command_with_a_configuration_gets_the_collector_policy(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"storage:\n  root: {tmp_path / 'var'}\n", encoding="utf-8")
    code = textwrap.dedent(
        f"""
        import gc
        from node.app import GC_FIRST_GENERATION_THRESHOLD
        from node.cli.main import main
        assert gc.get_threshold()[0] != GC_FIRST_GENERATION_THRESHOLD
        main(["config", "check", "-c", {str(config)!r}])
        print(gc.get_threshold()[0] == GC_FIRST_GENERATION_THRESHOLD)
        """
    )
    assert _run(code).splitlines()[-1] == "True"
