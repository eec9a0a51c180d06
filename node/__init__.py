"""dicom-node: a DICOM network node with a provable chain of custody."""

import os

__version__ = "0.1.0"

# pydicom imports numpy, whose OpenBLAS starts a thread per core that spins while idle;
# the node does no linear algebra, and on a small machine those threads took CPU from
# the association threads (seen with perf during C-STORE bursts). It must be set before
# numpy's first import, hence here; an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
