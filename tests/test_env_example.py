""".env.example lists every setting (DESIGN.md's public contract): each field of
service/config.py's Settings, with a comment, at its real default — so an operator who
copies it to .env and uncomments a line starts from the truth."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices

from service.config import Settings

EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"
LINE = re.compile(r"^#\s?([A-Z][A-Z0-9_]*)=(.*)$")


def env_name(field: str) -> str:
    """The variable a field is read from (its first name, for one with several)."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias or info.alias or field.upper())


def entries() -> dict[str, tuple[str, int]]:
    """NAME → (its value as written, its line number)."""
    found = {}
    for n, line in enumerate(EXAMPLE.read_text(encoding="utf-8").splitlines()):
        m = LINE.match(line)
        if m:
            assert m[1] not in found, f"{m[1]} is listed twice in .env.example"
            found[m[1]] = (m[2], n)
    return found


def test_every_setting_is_in_env_example():
    listed = entries()
    missing = sorted(env_name(f) for f in Settings.model_fields if env_name(f) not in listed)
    assert not missing, f".env.example lacks {', '.join(missing)}: add each with its default and a comment"


def test_env_example_names_nothing_that_is_not_a_setting():
    names = {env_name(f) for f in Settings.model_fields}
    stale = sorted(set(entries()) - names)
    assert not stale, f".env.example lists {', '.join(stale)}, which service/config.py does not read"


def test_every_setting_in_env_example_has_its_comment():
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for name, (_, n) in entries().items():
        above = n - 1
        while above >= 0 and LINE.match(lines[above]):  # a pair shares one comment (DKIM_…)
            above -= 1
        assert above >= 0 and lines[above].startswith("# ") and len(lines[above]) > 4, f"{name} has no comment"


def test_env_example_gives_the_real_defaults(tmp_path, monkeypatch):
    """Uncommented as it is, .env.example configures exactly the defaults."""
    for field in Settings.model_fields:
        info = Settings.model_fields[field]
        names = info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else [env_name(field)]
        for name in names:
            monkeypatch.delenv(str(name), raising=False)
    # an empty value means "unset" (the default), as the comments say
    env = tmp_path / "example.env"
    env.write_text("".join(f"{k}={v}\n" for k, (v, _) in entries().items() if v), encoding="utf-8")

    written = Settings(_env_file=env).model_dump()
    default = Settings(_env_file=None).model_dump()
    assert Path(written.pop("var_dir")).resolve() == Path(default.pop("var_dir")).resolve()
    written.pop("database_url"), default.pop("database_url")  # derived from VAR_DIR: relative vs absolute
    wrong = {k: (written[k], default[k]) for k in default if written[k] != default[k]}
    assert not wrong, f".env.example's value differs from the default for {wrong}"


@pytest.mark.parametrize("name", ["SMTP_DATA_TIMEOUT", "SMTP_CONNECT_TIMEOUT", "SMTP_AMBIGUOUS", "SMTP_TIMEOUT"])
def test_the_smtp_timeouts_are_documented_in_the_readme(name):
    readme = (EXAMPLE.parent / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^\| `{name}` \| `[^`]+` \| .{{20,}}\|$", readme, re.M), f"README's settings table lacks {name}"
