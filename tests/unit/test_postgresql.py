"""The index on PostgreSQL: URLs, the driver, and the serialising lock (node.storage.database)."""

from __future__ import annotations

import threading

import pytest

from node.errors import StorageError
from node.schema import open_database
from node.storage import audit
from node.storage.database import engine_url
from tests.pg import Cluster


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://node@db.example/archive", "postgresql+psycopg"),  # not psycopg2
        ("postgresql+psycopg://node@db.example/archive", "postgresql+psycopg"),
        ("sqlite:////var/lib/node.sqlite", "sqlite"),
    ],
)
def test_plain_postgresql_urls_use_psycopg_3(url: str, driver: str) -> None:
    assert engine_url(url).drivername == driver


def test_both_url_forms_open_the_same_database(postgres_cluster: Cluster) -> None:
    name = postgres_cluster.new_database()
    plain = open_database(postgres_cluster.url(name, driver="postgresql"))
    explicit = open_database(postgres_cluster.url(name, driver="postgresql+psycopg"))
    with plain.begin() as conn:
        audit.append(conn, "instance-stored", details={"n": 1})
    assert [r.details for r in audit.records(explicit)] == [{"n": 1}]
    assert explicit.dialect.driver == plain.dialect.driver == "psycopg"
    plain.dispose()
    explicit.dispose()


def test_an_unsupported_database_is_one_clear_error() -> None:
    with pytest.raises(StorageError, match="mysql is not supported"):
        open_database("mysql://node@db.example/archive")


def test_a_transaction_waits_for_the_one_before_it(postgres_cluster: Cluster) -> None:
    """The advisory lock serialises transactions as BEGIN IMMEDIATE does on SQLite: a
    second one reads the audit head only after the first has committed its record."""
    engine = open_database(postgres_cluster.url(postgres_cluster.new_database()))
    first_in, second_done = threading.Event(), threading.Event()

    def second() -> None:
        first_in.wait(30)
        with engine.begin() as conn:
            audit.append(conn, "second")
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    with engine.begin() as conn:
        audit.append(conn, "first")
        first_in.set()
        # The second transaction is queued on the lock, not done (pg_locks shows it waiting).
        with postgres_cluster.connect() as watcher:  # outside the node's engine and lock
            waiting: list[tuple[object, ...]] = []
            while not waiting and not second_done.is_set():
                waiting = watcher.execute(
                    "SELECT locktype FROM pg_locks WHERE NOT granted"
                ).fetchall()
        assert not second_done.is_set()
        assert waiting == [("advisory",)]  # before it read the head, not at the insert
    thread.join(30)
    assert [r.event for r in audit.records(engine)] == ["first", "second"]
    assert audit.verify_chain(engine).ok
    engine.dispose()


def test_every_session_commits_synchronously_and_keeps_the_urls_options(
    postgres_cluster: Cluster,
) -> None:
    """A C-STORE's Success needs its commit on disk: ``synchronous_commit`` is forced on,
    even where the database's default is off; options named in the URL still apply."""
    name = postgres_cluster.new_database()
    with postgres_cluster.connect() as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    url = postgres_cluster.url(name) + "&options=-c%20application_name%3Ddicom-node-test"
    engine = open_database(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        assert conn.exec_driver_sql("SHOW application_name").scalar() == "dicom-node-test"
    engine.dispose()
