"""Revisions of the capture schema, oldest first by ``down_revision``."""
