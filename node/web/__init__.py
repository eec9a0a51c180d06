"""The node's HTTP service: WADO-URI (PS3.18 9) over its own archive, inside ``serve``."""
