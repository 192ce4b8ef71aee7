"""Nashra (نشرة): newsletter and breaking-news alerts for an Arabic news site."""

__version__ = "0.1.0"
