"""DICOM Upper Layer (PS3.8) and DIMSE command sets (PS3.7) for the storage fast path."""
