"""How `nashra web` runs uvicorn: which proxies' X-Forwarded-For it believes.

uvicorn, left to itself, trusts X-Forwarded-For from 127.0.0.1 (or from its own reading
of FORWARDED_ALLOW_IPS): any local client — or a proxy that passes the header through —
could then name its own address and walk past the signup limit.  Here the header is
believed only from the addresses FORWARDED_ALLOW_IPS lists, and by default from nobody.
"""

from __future__ import annotations

from service.config import Settings, get_settings


def uvicorn_options(settings: Settings | None = None) -> dict:
    """The proxy part of uvicorn.Config / uvicorn.run's keyword arguments."""
    trusted = list((settings or get_settings()).forwarded_allow_ips)
    if not trusted:
        return {"proxy_headers": False, "forwarded_allow_ips": []}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}
