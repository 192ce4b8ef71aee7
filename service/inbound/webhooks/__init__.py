"""Provider webhooks: each provider's events, verified its own way, as Feedback.

`receive.receive(provider, headers, body)` is the entry point (service/web/webhooks.py
calls it); `ses` (with `sns`, SNS's envelope), `mailgun`, `postmark` and `sendgrid` each
verify a request and read its events; `common` holds what they share.
"""
