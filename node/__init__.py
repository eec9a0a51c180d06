"""dicom-node: a DICOM network node with a provable chain of custody."""

__version__ = "0.1.0"
