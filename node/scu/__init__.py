"""Outbound associations (SCU side)."""
