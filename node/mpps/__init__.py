"""Modality Performed Procedure Step: rules, persistence and the acquisition wait."""
