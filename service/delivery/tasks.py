"""Celery tasks for delivery (planning, batches, sweeping): thin wrappers over service.delivery."""
