"""Jinja2 + premailer, once per edition and audience variant; cheap per-recipient fill-in."""
