"""Jinja2 + premailer, once per edition and audience variant; cheap per-recipient fill-in.

contexts.py     one small function per kind → template context (plain views in, no DB)
render.py       render_variant(kind, context): Jinja2 → premailer → text part
inline.py       premailer configured to do no harm
personalise.py  personalise(variant, …): the two per-recipient links, by substitution
mime.py         build_message(…) and PreparedVariant: multipart/alternative, base64, RFC 2047
bidi.py         <span dir="ltr"> for Latin runs and signed numbers in the body; LRM/RLM marks
                in the Subject, the preheader and the text part
dates.py        Arabic dates (Levantine/Egyptian months), absolute times, the zone, Hijri, digits
article_html.py article HTML through nh3 before it may enter an email
viewmodels.py   the frozen data templates are rendered from

The RTL rules every rendered mail must pass are docs/email-rules.md; the checker that
enforces them is test-only (tests/support/email_checks.py).
"""
