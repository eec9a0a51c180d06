"""Durable storage: the archive files, the index and the audit log."""
