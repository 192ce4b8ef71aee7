"""Celery tasks for ingestion, digests and transactional mail: thin wrappers over plain functions."""
