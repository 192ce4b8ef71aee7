"""Editions: one digest or one alert — what it holds and how each audience variant reads."""
