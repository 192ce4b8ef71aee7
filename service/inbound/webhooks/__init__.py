"""Provider webhooks: each provider's events, verified its own way, as Feedback."""
