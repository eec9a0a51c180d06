"""The shipped ``config/node.yaml`` from a fresh clone, README in hand.

A copy of the repository's ``config/`` in a temporary folder stands for the clone: the
node must write only under its ``var/``, and ``report create`` must work with the
``reporting`` block the README gives, after storing a study.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import STUDY_UID, ct_dataset
from tests.integration.process import NodeProcess
from tests.integration.scu import association, store_status

ROOT = Path(__file__).resolve().parents[2]


def readme_reporting_block() -> str:
    """The first ```yaml block of the README that starts with ``reporting:``."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if b.startswith("reporting:"))


def run(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=clone,  # the README's commands run from the repository
    )


def test_default_configuration_writes_under_var_and_report_create_works(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "config", clone / "config")
    config = clone / "config/node.yaml"
    # The README's order: Smith's key, the reporting block, the node, the study, the report.
    keys = run(clone, "keys", "init", "--dir", "var/keys/smith", "--subject", "Smith^John")
    assert keys.returncode == 0, keys.stderr
    # OS-assigned ports for DICOM and HTTP.
    text = config.read_text().replace("port: 11112", "port: 0").replace("port: 8080", "port: 0")
    config.write_text(text + readme_reporting_block())
    assert "reporting" in yaml.safe_load(config.read_text())
    node = NodeProcess(config)
    try:
        with association(node.port) as assoc:
            assert store_status(assoc, ct_dataset()) == 0
        (clone / "dictation.txt").write_text("FINDINGS: No acute abnormality.\n")
        made = run(clone, "report", "create", STUDY_UID, "--text", "dictation.txt")
        assert made.returncode == 0, made.stderr
    finally:
        assert node.terminate() == 0
    drafts = list((clone / "var/reports").glob("*.dcm"))
    assert len(drafts) == 1, made.stdout
    assert len(list((clone / "var/reports").glob("*.xml"))) == 1  # the equivalent CDA
    # One root: nothing the node wrote is beside the configuration.
    assert sorted(p.name for p in (clone / "config").iterdir()) == [
        "example-site.yaml",
        "node.yaml",
    ]
    assert {p.name for p in (clone / "var").iterdir()} >= {"archive", "node.sqlite", "keys"}
