"""Newsroom staff: editors and admins, their tokens and roles (not readers)."""
