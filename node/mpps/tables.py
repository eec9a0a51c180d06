"""The tables node.mpps owns: MPPS instances, what a COMPLETED step lists, the waits.

PS3.4 F.7 (the Modality Performed Procedure Step SOP Class) and PS3.17 Annex W case 1
(the acquisition wait). Only node.mpps reads or writes these tables; other packages ask
:mod:`node.mpps.reads`. The tables sit on the index's one MetaData
(:data:`node.storage.database.metadata`); :mod:`node.schema` imports this module so that
``create_all`` knows them.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, LargeBinary, String, Table, Text

from node.storage.database import metadata

mpps = Table(
    "mpps",
    metadata,
    Column("mpps_uid", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("study_uid", String(64)),
    Column("calling_ae", String(16), nullable=False),
    Column("attributes", LargeBinary, nullable=False),  # Explicit VR LE data set
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)

# What a COMPLETED MPPS lists, and the wait for it (PS3.17 Annex W case 1).
mpps_expected = Table(
    "mpps_expected",
    metadata,
    Column("mpps_uid", String(64), ForeignKey("mpps.mpps_uid"), primary_key=True),
    Column("sop_instance_uid", String(64), primary_key=True),
    Column("sop_class_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Index("ix_mpps_expected_instance", "sop_instance_uid"),
    Index("ix_mpps_expected_series", "series_uid"),
)

acquisitions = Table(
    "acquisitions",
    metadata,
    Column("mpps_uid", String(64), ForeignKey("mpps.mpps_uid"), primary_key=True),
    # waiting -> building -> kos-built; waiting -> incomplete (timeout); failed (retried)
    Column("state", String(16), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("deadline", String(40), nullable=False),
    Column("kos_uid", String(64)),
    Column("missing", Text, nullable=False, default="[]"),
    Column("detail", Text, nullable=False, default=""),
    Column("updated_at", String(40), nullable=False),
)
