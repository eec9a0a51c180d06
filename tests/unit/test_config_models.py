"""Configuration models: frozen, closed to unknown keys, validated also when built in code."""

from __future__ import annotations

import enum
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import node.config as config_package
from node.config import LocalNode, NodeConfig, Peer, RemoteAE, RetryPolicy, parse_config
from node.errors import ConfigError

# Every class node.config exports but the enumerations of closed sets.
MODELS = [
    value
    for value in vars(config_package).values()
    if isinstance(value, type) and not issubclass(value, enum.Enum)
]


def test_every_configuration_class_is_a_frozen_closed_pydantic_model() -> None:
    assert len(MODELS) >= 15, MODELS
    for model in MODELS:
        assert issubclass(model, BaseModel), model
        assert model.model_config.get("frozen") is True, model
        assert model.model_config.get("extra") == "forbid", model


def _sections(value: Any) -> list[BaseModel]:
    """``value`` and every model inside it."""
    if isinstance(value, BaseModel):
        found = [value]
        for name in type(value).model_fields:
            found += _sections(getattr(value, name))
        return found
    if isinstance(value, tuple):
        return [m for item in value for m in _sections(item)]
    return []


def test_assignment_to_a_loaded_configuration_raises(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    config = parse_config(
        {
            "peers": [{"ae_title": "CT_1"}],
            "partners": [{"name": "b", "ae_title": "B", "host": "h", "port": 1, "tls": True}],
            "transfers": {"rules": [{"partner": "b"}]},
            "reporting": {"people": [{"name": "A", "key": "c.pem", "certificate": "c.pem"}]},
            "tls": {"certificate": "c.pem", "key": "c.pem"},
        },
        tmp_path,
    )
    sections = _sections(config)
    assert len(sections) == len(MODELS)  # one of each: every section and every list entry
    for section in sections:
        name = next(iter(type(section).model_fields))
        with pytest.raises(ValidationError, match="frozen"):
            setattr(section, name, getattr(section, name))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RemoteAE(name="b", ae_title="B", host="h", port=0), "must be 1-65535"),
        (lambda: RemoteAE(name="b", ae_title="B", host="h", port=65536), "must be 1-65535"),
        (lambda: LocalNode(port=70000), "must be 0-65535"),
        (lambda: LocalNode(ae_title="THIS_TITLE_IS_TOO_LONG"), "must be 1-16 characters"),
        (lambda: Peer(ae_title="WS", port=104), "is required when port is given"),
        (lambda: RetryPolicy(initial="soon"), "must be a duration"),
        (lambda: LocalNode(colour="blue"), "unknown key"),  # type: ignore[call-arg]
    ],
)
def test_a_model_built_in_code_is_validated_too(build: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build()


def test_models_built_in_code_keep_their_defaults() -> None:
    config = NodeConfig()
    assert config.storage.archive == Path("var/archive")
    assert config.storage.database == "sqlite:///var/node.sqlite"
    assert config.signing.key == Path("var/keys/signer.key.pem")
    assert config.manifests.reports == Path("var/manifests")
    assert RetryPolicy(initial=30, factor=2, maximum=100, attempts=5).initial == 30.0


def test_rules_between_fields_are_reported_with_every_other_error(tmp_path: Path) -> None:
    data = {
        "node": {"port": 70000},
        "peers": [
            {"ae_title": "THIS_TITLE_IS_TOO_LONG", "port": 104},  # and no host
            {"ae_title": "CT_1"},
            {"ae_title": "CT_1"},
        ],
        "partners": [{"name": "b", "ae_title": "B", "host": "h", "port": 0, "tls": {"key": "k"}}],
        "transfers": {"rules": [{"partner": "nowhere", "when": "daily"}]},
        "logging": {"level": "LOUD"},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path)
    keys = [problem.split(": ")[0] for problem in caught.value.problems]
    assert sorted(keys) == sorted(
        [
            "node.port",
            "peers[0].ae_title",
            "peers[0].host",
            "peers[2]",
            "partners[0].port",
            "partners[0].tls",  # certificate and key must be given together
            "partners[0].tls.key",  # file not found
            "transfers.rules[0].when",
            "transfers.rules[0].partner",
            "logging.level",
        ]
    ), caught.value.problems


def test_cli_reports_every_error_in_one_line_each_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "node: {port: 0, colour: red}\n"
        "partners: [{name: b, ae_title: B, host: h, port: 0},\n"
        "           {name: b, ae_title: C, host: h, port: 65536}]\n"
        "manifests: {wait: 5min}\n"
        "logging: {level: debug}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "node", "config", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert sorted(line.removeprefix(f"dicom-node: {path}: ") for line in lines) == [
        "logging.level: must be one of DEBUG, INFO, WARNING, ERROR (got 'debug')",
        "manifests.wait: must be a duration such as 30s, 10m or 2h (got '5min')",
        "node.colour: unknown key (allowed: acse_timeout, ae_title, dimse_timeout, fast_path, "
        "host, max_associations, max_pdu, network_timeout, port, shutdown_grace)",
        "partners[0].port: must be 1-65535 (got 0)",
        "partners[1].port: must be 1-65535 (got 65536)",
        "partners[1]: duplicate 'b'",
    ]
