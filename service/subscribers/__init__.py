"""Readers: signup, double opt-in, preferences, one-click unsubscribe, suppression."""
