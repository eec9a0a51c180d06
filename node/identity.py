"""Who this software is, in DICOM terms (PS3.7 D.3.3.2 implementation identification)."""

from __future__ import annotations

import uuid

from node import __version__

# A UUID-derived UID (PS3.5 B.2): no registered organisation root is needed.
IMPLEMENTATION_CLASS_UID = "2.25.46654977012444513278690701103083225582"
IMPLEMENTATION_VERSION_NAME = f"DICOMNODE_{__version__}"[:16]


def new_uid() -> str:
    """A new globally unique UID under the 2.25 arc (PS3.5 B.2)."""
    return f"2.25.{uuid.uuid4().int}"
