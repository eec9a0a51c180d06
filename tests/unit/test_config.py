"""Configuration: every bad input is reported with its key path, all at once, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from node.config import Role, load_config, parse_config
from node.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

BAD_INPUTS = [
    ("node: {port: 70000}", "node.port: must be 1-65535"),
    ("node: {port: eleven}", "node.port: must be 1-65535"),
    ("node: {ae_title: THIS_TITLE_IS_TOO_LONG}", "node.ae_title: must be 1-16 characters"),
    ("node: {ae_title: 'A\\\\B'}", "node.ae_title: must not contain a backslash"),
    ("node: {ae_title: '    '}", "node.ae_title: must not be all spaces"),
    ("node: {colour: blue}", "node.colour: unknown key"),
    ("nodes: {}", "nodes: unknown key"),
    ("peers: {ae_title: X}", "peers: must be a list"),
    ("peers: [{host: 127.0.0.1}]", "peers[0].ae_title: is required"),
    ("peers: [{ae_title: CT_1, roles: [store, fly]}]", "peers[0].roles: unknown role"),
    ("peers: [{ae_title: CT_1}, {ae_title: CT_1}]", "peers[1]: duplicate 'CT_1'"),
    ("transfers: {rules: [{partner: nowhere}]}", "transfers.rules[0].partner: no partner named"),
    ("transfers: {rules: [{partner: x, when: daily}]}", "transfers.rules[0].when: must be one of"),
    ("transfers: {rules: [{when: acquisition-kos}]}", "transfers.rules[0].partner: is required"),
    ("transfers: {poll_interval: 0}", "transfers.poll_interval: must be more than zero"),
    ("manifests: {wait: soon}", "manifests.wait: must be a duration"),
    ("manifests: {keep: 1}", "manifests.keep: unknown key"),
    ("peers: [{ae_title: WS, host: h, port: 99999}]", "peers[0].port: must be 1-65535"),
    ("peers: [{ae_title: WS, port: 11113}]", "peers[0].host: is required when port is given"),
    (
        "partners: [{name: b, ae_title: B, host: h, port: 0, retry: {factor: -1}}]",
        "partners[0].retry.factor: must be a positive number",
    ),
    ("sources: [{name: pacs, ae_title: PACS, host: h}]", "sources[0].port: is required"),
    (
        "acquisition: {completion_timeout: soon}",
        "acquisition.completion_timeout: must be a duration",
    ),
    ("signing: {key: missing.pem, certificate: missing.pem}", "signing.key: file not found"),
    ("signing: {mac_algorithm: MD5}", "signing.mac_algorithm: must be one of SHA256"),
    ("tls: {certificate: c.pem, key: k.pem}", "tls.certificate: file not found"),
    ("trust: [nowhere.pem]", "trust[0]: file not found"),
    ("logging: {level: LOUD}", "logging.level: must be one of"),
    ("storage: {fsync: maybe}", "storage.fsync: must be true or false"),
    ("- just\n- a list", "(top level): must be a mapping"),
    ("node: {port: 1\n  bad", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_reported_with_its_key_path(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    data = {"node": {"port": -1, "ae_title": ""}, "peers": [{"roles": ["x"]}], "extra": 1}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path)
    problems = caught.value.problems
    assert len(problems) == 5, problems
    assert {p.split(":")[0] for p in problems} == {
        "node.port",
        "node.ae_title",
        "peers[0].ae_title",
        "peers[0].roles",
        "extra",
    }


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = parse_config({"peers": [{"ae_title": "CT_1", "roles": ["store"]}]}, tmp_path)
    assert config.node.port == 11112
    assert config.storage.archive == tmp_path / "var/archive"
    assert config.storage.database == f"sqlite:///{tmp_path / 'var/node.sqlite'}"
    assert config.peers[0].roles == frozenset({Role.STORE})
    assert config.acquisition.completion_timeout == 600.0


def test_durations(tmp_path: Path) -> None:
    config = parse_config({"acquisition": {"completion_timeout": "2h"}}, tmp_path)
    assert config.acquisition.completion_timeout == 7200.0


def test_shipped_configurations_are_valid() -> None:
    load_config(ROOT / "config/node.yaml")
    example = yaml.safe_load((ROOT / "config/example-site.yaml").read_text())
    # The example names site files that do not exist here; everything else must validate.
    with pytest.raises(ConfigError) as caught:
        parse_config(example, ROOT / "config")
    assert all("file not found" in p for p in caught.value.problems), caught.value.problems


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_bad_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("node: {port: 70000, ae_title: 'TOO_LONG_FOR_A_TITLE'}\n")
    result = run_cli("config", "check", "-c", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(str(path) in line for line in lines)
    assert "Traceback" not in result.stderr


def test_cli_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("status", "-c", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_masks_database_password(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("storage: {database: 'postgresql://dicom:s3cret@db/node'}\n")
    result = run_cli("config", "check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert "postgresql://dicom:***@db/node" in result.stdout
