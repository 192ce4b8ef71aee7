"""The `nashra` command (also `python -m service`): argument parsing in `main`, one
thin function per command calling the use-cases and the jobs layer."""

from service.cli.main import main

__all__ = ["main"]
