"""Query/Retrieve over the node's own archive (PS3.4 Annex C): identifiers to index queries.

It lives with the tables it reads: C-FIND matching (PS3.4 C.2.2.2) becomes SQL over the
archive hierarchy's columns, which only their owner, :mod:`node.storage`, may name. The
C-FIND SCP and, later, QIDO-RS share it; neither imports pynetdicom.
"""
