"""Curation: ingest, dedup, captions, dataset versions and their export for trainers."""
