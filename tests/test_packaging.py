"""The service installs from a wheel and runs without `pip install -e`.

The wheel must carry what the service reads at run time: the mail and web templates
(the repository keeps them at the top level, pyproject.toml maps them into
service/templates/), the editor's script, and the Alembic migrations with their
alembic.ini.  State goes under VAR_DIR (default ./var in the working directory), never
beside site-packages.

The slow test builds the wheel from a copy of this working tree, installs it (not
editable) into a fresh virtualenv, and from a directory outside the repository
migrates a SQLite database, ingests a feed, sends a digest rendered from the installed
templates to a real SMTP sink, and serves the signup page and the editors' script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support.feed_server import FeedServer
from tests.support.smtp_sink import SmtpSink

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FEED = REPO / "service" / "demo" / "sample_feed.xml"


def _files_under(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }


def _source_packages() -> set[str]:
    """Every directory under service/ holding Python code, as a dotted package name."""
    found = set()
    for py in (REPO / "service").rglob("*.py"):
        if "__pycache__" not in py.parts:
            found.add(".".join(py.parent.relative_to(REPO).parts))
    return found


def test_pyproject_lists_every_package_under_service():
    """`packages` is an explicit list (find cannot map templates/ into the package):
    a package added under service/ and not listed would be missing from the wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    missing = _source_packages() - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    assert config["package-dir"] == {"service.templates": "templates"}
    assert "service.templates" in listed


def _copy_working_tree(dest: Path) -> None:
    """The files a clean clone of this working tree would hold (tracked or new, not ignored)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True, timeout=60,
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = []
    if not names:  # not a git checkout: everything but the usual build and run litter
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "var", "__pycache__", ".*_cache"))
        return
    for name in names:
        src = REPO / name
        if src.is_file():  # a file deleted but not yet staged is listed and absent
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _run(argv, *, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _pip_env() -> dict[str, str]:
    """The environment for pip: this one (its index and cache settings), minus anything
    that would point the new interpreter back at this repository or this virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


RUN_INSTALLED = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import service
    from service import resources
    from service.config import get_settings
    from service.db import session_scope
    from service.delivery.batch import send_batch
    from service.delivery.fanout import plan_and_dispatch
    from service.dispatch import Recorder
    from service.models import Subscriber, SubscriberStatus
    from service.newsletters import catalogue, membership
    from service.usecases.digests import start_digest

    with session_scope() as session:
        reader = Subscriber(email="reader@example.com", status=SubscriberStatus.active)
        session.add(reader)
        session.flush()
        membership.join(session, reader.id, catalogue.digest_for(session, "daily"))

    # What the planner and batch tasks do in a worker, here in one process.
    recorder = Recorder()
    edition_id = start_digest("daily", scheduled=False, dispatcher=recorder)
    assert edition_id is not None, "the ingested articles made no digest"
    plan_and_dispatch(edition_id, dispatcher=recorder)
    sent = 0
    for call in list(recorder.calls):
        if call[0] == "send_batches":
            for first, last in call[3]:
                sent += send_batch(edition_id, first, last, dispatcher=recorder).by_status["sent"]
    # The web pages and the editors' script, from the installed templates too.
    from fastapi.testclient import TestClient

    from service.web.app import create_app

    with TestClient(create_app()) as client:
        signup, live_js = client.get("/"), client.get("/editor/live.js")

    Path(sys.argv[1]).write_text(json.dumps({
        "service": service.__file__,
        "templates": str(resources.email_templates_dir()),
        "var_dir": str(get_settings().var_dir),
        "edition_id": edition_id,
        "sent": sent,
        "signup": [signup.status_code, signup.text],
        "live_js": [live_js.status_code, live_js.text],
        "live_js_file": str(resources.web_templates_dir() / "editor_live.js"),
    }), encoding="utf-8")
    """
)


@pytest.mark.slow
def test_wheel_installs_and_sends_a_digest_without_the_source_tree(tmp_path):
    # 1. Build the wheel from a copy of the working tree (no build/ litter in the repo).
    src, dist = tmp_path / "src", tmp_path / "dist"
    _copy_working_tree(src)
    pip_env = _pip_env()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)],
         cwd=tmp_path, env=pip_env)
    (wheel,) = dist.glob("nashra-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "service/templates/emails/digest/subject.txt" in names
    for rel in _files_under(REPO / "templates"):
        assert f"service/templates/{rel}" in names, rel
    assert "service/templates/web/editor_live.js" in names
    assert "service/migrations/alembic.ini" in names
    assert "service/migrations/env.py" in names
    for rel in _files_under(REPO / "service" / "migrations" / "versions"):
        assert f"service/migrations/versions/{rel}" in names, rel
    assert not any(n.startswith(("templates/", "migrations/")) for n in names)  # nothing top-level

    # 2. A fresh virtualenv (no system site-packages), the wheel installed as a wheel.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=pip_env)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], cwd=tmp_path, env=pip_env)
    site_packages = Path(_run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=tmp_path, env=pip_env,
    ).stdout.strip())

    # 3. Run it from a directory outside the repository, against real SMTP and HTTP peers.
    work = tmp_path / "work"
    work.mkdir()
    assert not work.is_relative_to(REPO)
    sink, feeds = SmtpSink(), FeedServer()
    sink.start()
    feeds.start()
    try:
        feed_url = feeds.serve("/feed.xml", SAMPLE_FEED.read_bytes())
        env = {
            "PATH": os.pathsep.join([str(bindir), "/usr/bin", "/bin"]),
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            "DATABASE_URL": f"sqlite:///{work / 'nashra.sqlite3'}",
            "SMTP_URL": f"smtp://127.0.0.1:{sink.port}",
            "SECRET_KEY": "packaging-test-secret-0123456789abcdef",
            "FEED_ALLOW_PRIVATE": "true",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",
            # VAR_DIR unset: state goes to ./var under the working directory.
        }
        nashra = str(bindir / "nashra")
        assert "latest schema" in _run([nashra, "db", "upgrade"], cwd=work, env=env).stdout
        _run([nashra, "feeds", "add", feed_url], cwd=work, env=env)
        _run([nashra, "ingest"], cwd=work, env=env)
        (work / "run_installed.py").write_text(RUN_INSTALLED, encoding="utf-8")
        _run([str(python), "run_installed.py", "result.json"], cwd=work, env=env)
        result = json.loads((work / "result.json").read_text(encoding="utf-8"))
        messages = sink.wait_for(1)
    finally:
        feeds.stop()
        sink.stop()

    # The installed package ran, not the repository's.
    service_file = Path(result["service"]).resolve()
    assert service_file.is_relative_to(site_packages.resolve()), service_file
    assert not service_file.is_relative_to(REPO)
    assert Path(result["templates"]).resolve().is_relative_to(site_packages.resolve())
    assert Path(result["var_dir"]) == work / "var"
    assert not (site_packages / "var").exists() and not (site_packages.parent / "var").exists()

    # The digest went out over SMTP, rendered from the installed templates: RTL Arabic.
    assert result["sent"] == 1
    assert [m.rcpt_tos for m in messages] == [["reader@example.com"]]
    message = messages[0].message
    html = message.get_body(preferencelist=("html",)).get_content()
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert '<html lang="ar" dir="rtl"' in html
    assert 'dir="rtl"' in html.split("<body", 1)[1]
    assert "النشرة اليومية" in str(message["Subject"])
    assert "أمانة عمّان تطلق خطة" in html and "أمانة عمّان تطلق خطة" in text

    # The signup page and the editors' script were served from the installed package.
    status, page = result["signup"]
    assert status == 200 and 'dir="rtl"' in page
    status, script = result["live_js"]
    live_js_file = Path(result["live_js_file"])
    assert live_js_file.resolve().is_relative_to(site_packages.resolve())
    assert status == 200 and script == live_js_file.read_text(encoding="utf-8")

