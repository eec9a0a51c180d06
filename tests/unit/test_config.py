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
    ("node: {port: 70000}", "node.port: must be 0-65535"),
    ("node: {port: eleven}", "node.port: must be 0-65535"),
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
    ("partners: [{name: b, ae_title: B, host: h, port: 0}]", "partners[0].port: must be 1-65535"),
    ("sources: [{name: s, ae_title: S, host: h, port: 0}]", "sources[0].port: must be 1-65535"),
    ("peers: [{ae_title: WS, host: h, port: 0}]", "peers[0].port: must be 1-65535"),
    ("partners: [null]", "partners[0].name: is required"),
    (
        "acquisition: {completion_timeout: soon}",
        "acquisition.completion_timeout: must be a duration",
    ),
    ("signing: {key: missing.pem, certificate: missing.pem}", "signing.key: file not found"),
    ("signing: {mac_algorithm: MD5}", "signing.mac_algorithm: must be one of SHA256"),
    ("tls: {certificate: c.pem, key: k.pem}", "tls.certificate: file not found"),
    ("trust: [nowhere.pem]", "trust[0]: file not found"),
    ("logging: {level: LOUD}", "logging.level: must be one of"),
    ("logging: {level: debug}", "logging.level: must be one of DEBUG, INFO, WARNING, ERROR"),
    (
        "partners: [{name: b, ae_title: B, host: h, port: 65536}]",
        "partners[0].port: must be 1-65535",
    ),
    ("sources: [{name: s, ae_title: S, host: h, port: '104'}]", "sources[0].port: must be 1-65535"),
    ("manifests: {wait: 5min}", "manifests.wait: must be a duration such as 30s"),
    ("node: {network_timeout: 1h30m}", "node.network_timeout: must be a duration"),
    (
        "partners: [{name: b, ae_title: B, host: h, port: 1, retry: {initial: -5s}}]",
        "partners[0].retry.initial: must be a duration",
    ),
    (
        "partners: [{name: b, ae_title: B, host: h, port: 1, tls: {ca: x, pin: y}}]",
        "partners[0].tls.pin: unknown key",
    ),
    (
        "partners: [{name: b, ae_title: B, host: h, port: 1, retry: {delay: 1}}]",
        "partners[0].retry.delay: unknown key",
    ),
    (
        "sources: [{name: s, ae_title: S, host: h, port: 1, colour: red}]",
        "sources[0].colour: unknown key",
    ),
    ("peers: [{ae_title: WS, aet: WS}]", "peers[0].aet: unknown key"),
    ("transfers: {rules: [{partner: x, from_ae: CT}]}", "transfers.rules[0].from_ae: unknown key"),
    ("reporting: {people: [{name: A, sign: yes}]}", "reporting.people[0].sign: unknown key"),
    ("tls: {certificate: c.pem, key: k.pem, verify: no}", "tls.verify: unknown key"),
    ("logging: {level: INFO, file: x.log}", "logging.file: unknown key"),
    ("storage: {path: x}", "storage.path: unknown key"),
    ("source: node.yaml", "source: unknown key"),
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


# Each is a file PyYAML's safe_load accepts (or a decoding error), but not the node.
UNREADABLE = [
    (b"node:\n  ae_title: \xe9A\n", "line 2: not UTF-8 (byte 0xE9 at offset 18)"),
    (b"node: {ae_title: A}\nnode: {port: 5}\n", "node: duplicate key (lines 1 and 2)"),
    (b"node:\n  port: 5\n  port: 6\n", "node.port: duplicate key (lines 2 and 3)"),
    (
        b"partners:\n  - name: b\n    retry: {factor: 2, factor: 3}\n",
        "partners[0].retry.factor: duplicate key (lines 3 and 3)",
    ),
    (b"", "(top level): the file holds no configuration"),
    (b"# just a comment\n", "(top level): the file holds no configuration"),
]


@pytest.mark.parametrize(("raw", "message"), UNREADABLE, ids=[m for _, m in UNREADABLE])
def test_unreadable_file_exits_2_with_one_line(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_bytes(raw)
    for args in (("config", "check", "-c", str(path)), ("-c", str(path), "serve")):
        result = run_cli(*args)
        assert result.returncode == 2, result
        lines = result.stderr.splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"dicom-node: {path}: {message}"), lines
        assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.yaml"]  # serve wrote nothing


def test_aliases_and_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "partners:\n"
        "  - &a {name: a, ae_title: A, host: h, port: 1, retry: &r {factor: 3}}\n"
        "  - {name: b, ae_title: B, host: h, port: 2, retry: *r}\n"
        "  - {<<: *a, name: c}\n"
    )
    partners = load_config(path).partners
    assert [(p.name, p.port, p.retry.factor) for p in partners] == [
        ("a", 1, 3.0),
        ("b", 2, 3.0),
        ("c", 1, 3.0),
    ]


def test_every_listed_remote_is_kept_or_reported(tmp_path: Path) -> None:
    remotes = [
        {"name": f"r{port}", "ae_title": "R", "host": "h", "port": port} for port in (1, 65535)
    ]
    config = parse_config({"partners": remotes, "sources": remotes}, tmp_path)
    assert [p.port for p in config.partners] == [1, 65535]
    assert [p.port for p in config.sources] == [1, 65535]


def test_config_option_before_and_after_the_command(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("node: {ae_title: BEFORE_AFTER}\n")
    other = tmp_path / "other.yaml"
    other.write_text("node: {ae_title: OTHER}\n")
    for args in (
        ("-c", str(path), "config", "check"),
        ("--config", str(path), "config", "check"),
        ("config", "check", "-c", str(path)),
        ("-c", str(other), "config", "check", "-c", str(path)),  # the command's own wins
    ):
        result = run_cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert "ae_title: BEFORE_AFTER" in result.stdout, args
    help_text = run_cli("--help").stdout
    assert "-c FILE, --config FILE" in help_text


def test_everything_the_node_writes_defaults_under_storage_root(tmp_path: Path) -> None:
    config = parse_config({"storage": {"root": "../data"}}, tmp_path / "config")
    root = tmp_path / "data"
    assert config.storage.root == root
    assert config.storage.archive == root / "archive"
    assert config.storage.database == f"sqlite:///{root / 'node.sqlite'}"
    assert config.signing.key == root / "keys/signer.key.pem"
    assert config.signing.certificate == root / "keys/signer.cert.pem"
    assert config.manifests.reports == root / "manifests"
    assert config.reporting.output == root / "reports"
    shipped = load_config(ROOT / "config/node.yaml")  # the repository's var/, not config/var/
    assert shipped.reporting.output == ROOT / "var/reports"
    assert shipped.manifests.reports == ROOT / "var/manifests"
    assert shipped.storage.archive == ROOT / "var/archive"
