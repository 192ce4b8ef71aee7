"""`nashra subscribers import FILE.csv`: the import chunk by chunk, with a progress bar on
a terminal (a line on stderr every PROGRESS_EVERY rows otherwise) and the summary."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from service.subscribers.csvio import CsvError, ImportReport
from service.usecases import subscribers

PROGRESS_EVERY = 100_000  # rows, when stdout is not a terminal


def _counts(report: ImportReport) -> str:
    return (f"{report.rows:,} rows: {report.created:,} created, {report.already:,} already here, "
            f"{report.skipped:,} skipped")


def run(path: str) -> int:
    started = time.monotonic()
    try:
        if sys.stdout.isatty():
            columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TextColumn("{task.description}"),
                       TimeRemainingColumn())
            with Progress(*columns, console=Console(), transient=True) as bar:
                task = bar.add_task("", total=None)

                def show(report: ImportReport, done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, description=_counts(report))

                report = subscribers.import_file(path, progress=show)
        else:
            marks = [PROGRESS_EVERY]

            def lines(report: ImportReport, done: int, total: int) -> None:
                if report.rows >= marks[0]:
                    marks[0] = (report.rows // PROGRESS_EVERY + 1) * PROGRESS_EVERY
                    print(f"{_counts(report)} ({100 * done // max(total, 1)} % of the file)", file=sys.stderr,
                          flush=True)

            report = subscribers.import_file(path, progress=lines)
    except KeyboardInterrupt as exc:
        done = getattr(exc, "report", None)
        kept = (f"{done.created} created, {done.already} already here, {done.skipped} skipped" if done is not None
                else "nothing")
        print(f"interrupted: the chunks written are kept ({kept}); run the same import again to go on: the "
              "readers already here are skipped", file=sys.stderr)
        return 130
    except (CsvError, OSError, UnicodeDecodeError) as exc:
        done = getattr(exc, "report", None)
        if done is None:
            print(f"error: {path}: {exc} (nothing was imported)", file=sys.stderr)
        else:
            print(f"error: {path}: {exc}", file=sys.stderr)
            print(f"the rows before it are imported ({done.created} created, {done.already} already here, "
                  f"{done.skipped} skipped); fix the file and run the same import again: the readers already "
                  "here are skipped", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - started
    print(report.summary())  # counts, then each skipped row by line (and the known sections)
    print(f"{report.rows:,} rows in {elapsed:.1f} s ({report.rows / max(elapsed, 1e-9):,.0f} rows/s)")
    return 1 if report.skipped else 0  # a script must see that rows were left out
