"""Documents the node builds: Key Object Selection (and, later, SR reports)."""
