"""Fixtures: configurations in temporary folders and nodes running on OS-assigned ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.app import Node, build_node, configure_libraries, ensure_development_key
from node.config import NodeConfig, parse_config
from node.storage.files import FileStore
from tests.pg import Cluster


def config_dict(root: Path, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node": {"ae_title": "DICOM_NODE", "host": "127.0.0.1", "port": 0},
        "storage": {"archive": str(root / "archive"), "database": str(root / "node.sqlite")},
        "signing": {
            "key": str(root / "keys/signer.key.pem"),
            "certificate": str(root / "keys/signer.cert.pem"),
            "create_if_missing": True,
        },
        "peers": [],
        "http": {"port": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the session (tests/pg.py), stopped at its end
    whatever the tests did; started only when a test asks for PostgreSQL."""
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``storage.database`` for a test that must hold on both index databases: an SQLite
    file, or a fresh database on the session's PostgreSQL server (a plain
    ``postgresql://`` URL, as a user writes it)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.sqlite'}"
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    return cluster.url(cluster.new_database(), driver="postgresql")


@pytest.fixture
def index_database(tmp_path: Path) -> str:
    """The ``storage.database`` that ``make_config`` writes. A module whose tests must hold
    on both databases overrides this fixture with one that returns ``database``."""
    return str(tmp_path / "node.sqlite")


@pytest.fixture
def make_config(tmp_path: Path, index_database: str) -> Callable[..., NodeConfig]:
    def make(**sections: Any) -> NodeConfig:
        storage = {"database": index_database, **sections.pop("storage", {})}
        return parse_config(config_dict(tmp_path, storage=storage, **sections), tmp_path)

    return make


@pytest.fixture
def start_node() -> Iterator[Callable[..., Node]]:
    """Start nodes in-process on port 0; all are stopped at the end of the test."""
    started: list[Node] = []

    def start(config: NodeConfig, files: FileStore | None = None) -> Node:
        configure_libraries(config)
        ensure_development_key(config)
        node = build_node(config, files=files)
        node.start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop(grace=2)


@pytest.fixture
def node(make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]) -> Node:
    """A running node with the default, open configuration."""
    return start_node(make_config())


@pytest.fixture(params=[True, False], ids=["fast-path", "pynetdicom"])
def fast_path(request: pytest.FixtureRequest) -> bool:
    """``node.fast_path`` for a test that must hold on both association paths."""
    return bool(request.param)


@pytest.fixture
def node_any_path(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node], fast_path: bool
) -> Node:
    """A running node with the open configuration, on each association path in turn.

    With ``node.fast_path: false`` pynetdicom serves every association; with true, the
    storage-only associations these tests open go to the fast path (see
    ``FastStoragePath.takes``).
    """
    return start_node(make_config(node={"fast_path": fast_path}))
