"""The tables node.signed_manifests owns: received Signed Manifests and what each lists.

PS3.17 Annex W case 2 (the receiving side checks the Signed Manifest KOS). Only
node.signed_manifests reads or writes these tables. They sit on the index's one MetaData
(:data:`node.storage.database.metadata`); :mod:`node.schema` imports this module so that
``create_all`` knows them.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text

from node.storage.database import metadata

# Received "Signed Manifest" KOS documents and the result of checking them.
received_manifests = Table(
    "received_manifests",
    metadata,
    Column("manifest_uid", String(64), primary_key=True),
    Column("study_uid", String(64), nullable=False),
    Column("calling_ae", String(16), nullable=False),
    # waiting (instances missing, before the deadline) -> verified | incomplete | altered
    # | untrusted
    Column("state", String(16), nullable=False),
    Column("deadline", String(40), nullable=False),
    Column("signer", Text, nullable=False, default=""),
    Column("referenced", Integer, nullable=False, default=0),
    Column("missing", Text, nullable=False, default="[]"),
    Column("altered", Text, nullable=False, default="[]"),
    Column("detail", Text, nullable=False, default=""),
    Column("report", Text, nullable=False, default=""),
    Column("received_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)

# Which instances each received manifest lists: a stored instance finds its manifests here.
manifest_references = Table(
    "manifest_references",
    metadata,
    Column(
        "manifest_uid",
        String(64),
        ForeignKey("received_manifests.manifest_uid"),
        primary_key=True,
    ),
    Column("sop_instance_uid", String(64), primary_key=True),
    Index("ix_manifest_references_instance", "sop_instance_uid"),
)
