"""Query/Retrieve over the node's own archive (PS3.4 Annex C): identifiers to index queries.

Domain code: reads the index of :mod:`node.storage.database`, never imports pynetdicom.
"""
