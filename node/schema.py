"""The whole index schema: every owner's tables registered on the one MetaData.

node.storage.database holds the shared ``metadata`` and creates what is registered on
it, but it sits below the packages that own the other tables, so it cannot import
them. This module sits above every owner (the layer right over the use cases) and
imports each owner's table module before the database is opened, so ``create_all``
always creates the full schema -- the same tables, columns and indexes whichever owner
a command happens to use. The composition root and the CLI open the database here.

Owners: node.storage (patients, studies, series, instances, duplicates, audit_log),
node.mpps (mpps, mpps_expected, acquisitions), node.transfer (transfers,
transfer_items), node.signed_manifests (received_manifests, manifest_references).
"""

from __future__ import annotations

from sqlalchemy import Engine

import node.mpps.tables
import node.signed_manifests.tables
import node.transfer.tables  # noqa: F401  (each import registers its owner's tables)
from node.storage import database

metadata = database.metadata


def open_database(url: str) -> Engine:
    """Open (and create where missing) the index database with every owner's tables."""
    return database.open_database(url)
