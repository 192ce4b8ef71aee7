"""Jinja2 + premailer, once per edition and audience variant; cheap per-recipient fill-in.

contexts.py     one small function per kind → template context (plain views in, no DB)
render.py       render_variant(kind, context): Jinja2 → premailer → text part
inline.py       premailer configured to do no harm
personalise.py  personalise(variant, …): the two per-recipient links, by substitution
mime.py         build_message(…) and PreparedVariant: multipart/alternative, base64, RFC 2047
checks.py       check_email(html, text): the RTL rules of DESIGN.md
bidi.py         <span dir="ltr"> for Latin runs and signed numbers; U+200F in the text part
dates.py        Arabic dates (Levantine/Egyptian months), relative times, Hijri, digits
sanitise.py     article HTML through nh3 before it may enter an email
samples.py      fixed inputs for golden files, layout tests and the benchmark
"""
