"""The demo's SMTP capture server: accepts every message on loopback and keeps it.

Each message is written atomically to `var/outbox/<time>-<n>.eml`; the web app's
/outbox page (demo mode only) reads them back and shows them as a mail client would.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

from aiosmtpd.controller import Controller

_counter = itertools.count(1)


class _SaveToDir:
    def __init__(self, outbox: Path):
        self.outbox = outbox

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}-{next(_counter):06d}.eml"
        tmp = self.outbox / f".{name}.tmp"
        header = f"X-Nashra-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode()
        tmp.write_bytes(header + envelope.content)
        os.replace(tmp, self.outbox / name)  # readers never see half a message
        return "250 2.0.0 Captured"


class CaptureServer:
    def __init__(self, outbox: Path, host: str = "127.0.0.1", port: int = 1025):
        outbox.mkdir(parents=True, exist_ok=True)
        self.outbox = outbox
        self.host, self.port = host, port
        self._controller = Controller(_SaveToDir(outbox), hostname=host, port=port, data_size_limit=50_000_000)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def messages(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml"))
