"""Coded concepts used by the node's documents: one table, no inline triplets elsewhere."""

from __future__ import annotations

from pydicom.sr.coding import Code

# CID 7010 Key Object Selection Document Title (PS3.16).
SIGNED_COMPLETE_ACQUISITION_CONTENT = Code("113035", "DCM", "Signed Complete Acquisition Content")
SIGNED_MANIFEST = Code("113031", "DCM", "Signed Manifest")
# TID 2010 row 6, and TID 1002/1004 observer context (PS3.16).
KEY_OBJECT_DESCRIPTION = Code("113012", "DCM", "Key Object Description")
OBSERVER_TYPE = Code("121005", "DCM", "Observer Type")
DEVICE = Code("121007", "DCM", "Device")
DEVICE_OBSERVER_UID = Code("121012", "DCM", "Device Observer UID")
DEVICE_OBSERVER_NAME = Code("121013", "DCM", "Device Observer Name")
