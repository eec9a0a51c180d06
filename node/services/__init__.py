"""DICOM services: thin pynetdicom handlers that translate events to domain calls."""
