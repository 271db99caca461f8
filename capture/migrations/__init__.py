"""Alembic migrations of the capture schema (run through ``capture.migrate``)."""
