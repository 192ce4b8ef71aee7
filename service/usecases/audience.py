"""How many readers an edition reaches, said the way the newsroom says it.

The count itself is the planner's (`service.delivery.planner.audience_by_variant`): the
same rule that writes the ledger, so what an editor is told is who gets the mail.
"""

from __future__ import annotations


def readers(n: int) -> str:
    """`12,480 مشتركاً`: the number in digits, the noun as Arabic counts it (by the last
    two digits: 3–10 take the plural, 11–99 the accusative singular, the rest the singular)."""
    if n == 1:
        return "مشترك واحد"
    if n == 2:
        return "مشتركَين"
    rest = n % 100
    if 3 <= rest <= 10:
        return f"{n:,} مشتركين"
    if 11 <= rest <= 99:
        return f"{n:,} مشتركاً"
    return f"{n:,} مشترك"


def reach(n: int) -> str:
    """«سيصل إلى 12,480 مشتركاً», or that it reaches nobody."""
    if n <= 0:
        return "لن يصل إلى أحد: لا مشترك مؤكَّد يتلقّى هذه الرسالة الآن"
    return f"سيصل إلى {readers(n)}"
