"""The ``dicom-node`` command line."""
