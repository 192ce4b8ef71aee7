"""POSTAL_ADDRESS in production (issue 19): once PUBLIC_URL is not on this machine, no
edition is made without an address set explicitly — empty or the demo's made-up one is
refused, with a message that names the setting — while the demo and a laptop keep the
default."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from service import dispatch
from service.config import DEMO_POSTAL_ADDRESS, ConfigError, load_settings, reset_settings
from service.editions.alerts import AlertError
from service.models import Edition
from service.usecases.alerts import send_alert
from service.usecases.digests import send_due, start_digest


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000",
                                 "http://nashra.localhost", "http://127.0.0.2:8000"])
def test_a_local_public_url_keeps_the_demo_address(url):
    settings = load_settings(public_url=url)
    assert settings.public_url_is_local and settings.postal_address == DEMO_POSTAL_ADDRESS
    settings.require_postal_address()


@pytest.mark.parametrize("address", [DEMO_POSTAL_ADDRESS, "", "   "])
def test_production_refuses_the_demo_address_or_none(address):
    settings = load_settings(public_url="https://news.example", postal_address=address)
    assert not settings.public_url_is_local
    assert not load_settings(public_url="http://10.0.0.5:8000").public_url_is_local  # private is not local
    with pytest.raises(ConfigError, match=r"^POSTAL_ADDRESS: .*PUBLIC_URL \(https://news.example\) is not local"):
        settings.require_postal_address()


def test_production_takes_an_address_set_explicitly():
    load_settings(public_url="https://news.example", postal_address="جريدة الغد، ص.ب. 1, عمّان").require_postal_address()


@pytest.fixture
def production_without_address(pg_env, monkeypatch):
    monkeypatch.setenv("PUBLIC_URL", "https://news.example")
    monkeypatch.setenv("POSTAL_ADDRESS", "")
    reset_settings()
    recorder = dispatch.Recorder()
    yield recorder
    assert recorder.calls == []  # nothing was asked of a worker


def _editions(pg_env) -> int:
    engine = sa.create_engine(pg_env)
    try:
        with engine.connect() as c:
            return c.scalar(sa.select(sa.func.count()).select_from(Edition))
    finally:
        engine.dispose()


def test_an_alert_is_refused_and_nothing_is_written(production_without_address, pg_env):
    with pytest.raises(AlertError, match="POSTAL_ADDRESS"):  # the API's 422, the CLI's error line
        send_alert(editor_id=None, headline="عاجل: خبر للتجربة", url="https://news.example/t",
                   dispatcher=production_without_address)
    assert _editions(pg_env) == 0


def test_a_digest_is_refused_by_hand_and_skipped_by_beat(production_without_address, pg_env):
    with pytest.raises(ConfigError, match="POSTAL_ADDRESS"):  # `nashra digest send`: "nashra: POSTAL_ADDRESS: …"
        start_digest("daily", scheduled=False, dispatcher=production_without_address)
    assert send_due(dispatcher=production_without_address) == []
    assert _editions(pg_env) == 0
