"""Dictation reports end to end: PS3.17 Annex X, signed as in Annex W case 1.

One module per use case over a :class:`node.reports.desk.ReportDesk` (one node's
configuration and archive):

* :mod:`node.reports.create` turns a transcription into a draft Basic Text SR (TID 2005)
  and its equivalent CDA (X.4.2), with the key images and evidence that
  :mod:`node.reports.evidence` gathers (W case 1 step 7) and, where the archive has no
  KOS "For Report Attachment", those :mod:`node.reports.fetch` retrieves (X.1.2).
* :mod:`node.reports.sign` adds a person's signature (W step 8) and archives the report.
* :mod:`node.reports.verify` makes the verified report, a new instance (W step 9).

The SR and CDA content are built by the domain modules of :mod:`node.documents`.
"""
