"""Retrieval of objects named by WADO-URI references, by C-GET or C-MOVE (PS3.17 X.4.3)."""
