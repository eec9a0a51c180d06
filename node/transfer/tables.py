"""The tables node.transfer owns: outgoing transfers and their instances.

PS3.17 Annex W case 2 (sending a study with its Signed Manifest). Only node.transfer
reads or writes these tables. They sit on the index's one MetaData
(:data:`node.storage.database.metadata`); :mod:`node.schema` imports this module so that
``create_all`` knows them.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text

from node.storage.database import metadata

# Outgoing transfers to partners (PS3.17 Annex W case 2). The state lives here, not in
# the scheduler, so a transfer survives restarts; see node.transfer.queue for the states.
transfers = Table(
    "transfers",
    metadata,
    Column("transfer_id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False),
    Column("partner", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("trigger", String(200), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", String(40), nullable=False),
    Column("last_error", Text, nullable=False, default=""),
    Column("manifest_uid", String(64)),
    Column("queued_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Index("ix_transfers_state", "state"),
)

# One row per instance of a transfer: pending, sent (Success or Warning) or refused.
transfer_items = Table(
    "transfer_items",
    metadata,
    Column("transfer_id", Integer, ForeignKey("transfers.transfer_id"), primary_key=True),
    Column("sop_instance_uid", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("status", Integer),
    Column("detail", Text, nullable=False, default=""),
)
