"""The archive commands against a real node: echo, studies, status, audit verify."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from node.config import parse_config
from node.schema import open_database
from tests.conftest import config_dict
from tests.helpers import ct_dataset
from tests.integration.process import write_config
from tests.integration.scu import association, store_status


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_echo_studies_status_and_audit(tmp_path: Path, start_node, database: str) -> None:
    data = config_dict(tmp_path, storage={"database": database})  # SQLite and PostgreSQL
    node = start_node(parse_config(data, tmp_path))
    data["sources"] = [
        {"name": "self", "ae_title": "DICOM_NODE", "host": "127.0.0.1", "port": node.port},
        {"name": "nobody", "ae_title": "NOBODY", "host": "127.0.0.1", "port": 1},
    ]
    config = write_config(tmp_path / "node.yaml", data)

    echo = cli(config, "echo", "self")
    assert echo.returncode == 0, echo.stderr
    assert "Success" in echo.stdout
    down = cli(config, "echo", "nobody")
    assert down.returncode == 1
    assert "could not be reached" in down.stderr
    assert cli(config, "echo", "unknown").returncode == 2

    with association(node.port) as assoc:
        for i in range(3):
            assert store_status(assoc, ct_dataset(number=i, seed=i)) == 0
    studies = cli(config, "studies")
    assert studies.returncode == 0
    assert "1.2.826.0.1.3680043.8.498.1 " in studies.stdout
    assert studies.stdout.strip().splitlines()[1].split()[-2:] == ["1", "3"]
    status = cli(config, "status")
    assert "3 instances" in status.stdout
    assert "chain intact" in status.stdout
    verified = cli(config, "audit", "verify")
    assert verified.returncode == 0
    assert "verified" in verified.stdout

    engine = open_database(parse_config(data, tmp_path).storage.database)
    with engine.begin() as conn:
        on = " ON audit_log" if engine.dialect.name == "postgresql" else ""
        conn.exec_driver_sql(f"DROP TRIGGER audit_no_update{on}")
        conn.exec_driver_sql("UPDATE audit_log SET event = 'edited' WHERE seq = 2")
    engine.dispose()
    broken = cli(config, "audit", "verify")
    assert broken.returncode == 1
    assert "BROKEN at record 2" in broken.stdout


def test_read_only_commands_on_a_fresh_configuration_create_nothing(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "fresh.yaml",
        {"node": {"port": 0}, "http": {"port": 0}, "signing": {"create_if_missing": True}},
    )
    database = tmp_path / "var/node.sqlite"
    expected = {
        ("studies",): (0, f"no studies (no index database at {database} yet)"),
        ("status",): (0, f"holds       nothing (no index database at {database} yet)"),
        ("audit", "verify"): (1, f"audit chain not verified: no index database at {database} yet"),
        ("manifests",): (0, f"no Signed Manifests received (no index database at {database} yet)"),
        ("config", "check"): (0, f"# {config}: valid"),
        ("verify-manifest", str(tmp_path)): (1, "Integrity check FAILED: no .dcm/.dcm.sig files"),
    }
    for args, (code, line) in expected.items():
        result = cli(config, *args)
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["fresh.yaml"], args
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert any(out.startswith(line) for out in result.stdout.splitlines()), (args, result)
    export = cli(config, "export", "1.2.3", str(tmp_path / "out"))
    assert export.returncode == 2
    assert export.stderr.startswith("dicom-node: study 1.2.3 is not in the archive")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["fresh.yaml"]
