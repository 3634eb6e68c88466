"""Errors a user can fix, and the command line's one boundary that turns them into one line on stderr.

Library code raises `UserError` (or a plain ValueError / FileNotFoundError naming the file or option, as the
house style asks); `ErrorBoundary` is the Typer group of `iterview.cli`: it prints such errors as
`error: <what> (<file or option>): <why>; <what to do>` and exits with EXIT_USAGE, while any other exception
keeps its traceback. `--debug` (or ITERVIEW_DEBUG=1) shows the traceback of every error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

EXIT_USAGE = 2
DEBUG_ENV = "ITERVIEW_DEBUG"
DEBUG_KEY = "iterview.debug"
# Bad input, missing or unreadable files: what the style guide asks edges to raise. Anything else is a bug.
EXPECTED_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


class UserError(ValueError):
    """Bad input the user can fix: what went wrong, where (a file or an option), why, and what to do."""

    def __init__(self, what: str, where: str | Path, why: str, fix: str | None = None) -> None:
        self.what, self.where, self.why, self.fix = what, str(where), why, fix
        super().__init__(f"{what} ({where}): {why}" + (f"; {fix}" if fix else ""))


class BatchFailed(UserError):
    """Some items of a batch failed (each already reported); the good ones were processed."""

    def __init__(self, what: str, where: str | Path, failed: int, total: int) -> None:
        super().__init__(what, where, f"{failed} of {total} failed (reasons above)", "fix or remove them and rerun")


def parse_problem(error: Exception) -> str:
    """A JSON, YAML or text-decoding error in one line: what is wrong and where (YAML's own message spans lines)."""
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start})"
    mark = getattr(error, "problem_mark", None)
    if getattr(error, "problem", None) and mark is not None:
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


def read_json(path: str | Path, what: str):
    """The JSON value in `path`; a missing or malformed file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found", path, "no such file", "check the path")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"unreadable {what}", path, f"not valid JSON ({error})", "restore or delete it") from None


def npz_error(path: str | Path, error: Exception) -> UserError:
    """A truncated or corrupt .npz (BadZipFile, EOFError, ...) as a UserError naming the file."""
    return UserError("unreadable file", path, f"not a complete .npz archive ({error})", "delete it and rerun")


def debug_enabled(ctx: click.Context | None = None) -> bool:
    """--debug on the command line, or ITERVIEW_DEBUG set to anything but 0/empty."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    return bool(ctx is not None and ctx.meta.get(DEBUG_KEY))


def describe(error: BaseException) -> str:
    """One line for an expected error (file-system errors keep their file name)."""
    if isinstance(error, OSError) and error.filename is not None and not isinstance(error, UserError):
        return f"{error.strerror or type(error).__name__} ({error.filename})"
    return str(error) or type(error).__name__


class ErrorBoundary(TyperGroup):
    """The Typer group every subcommand runs in: expected errors -> `error: ...` on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        """Run the subcommand; expected errors end it with one line on stderr (a traceback with debugging on)."""
        try:
            return super().invoke(ctx)
        except EXPECTED_ERRORS as error:
            if debug_enabled(ctx):
                raise
            click.echo(f"error: {describe(error)}", err=True)
            sys.stdout.flush()
            raise typer.Exit(EXIT_USAGE) from None


class BatchReport:
    """Run a batch item by item: an expected error in one item is reported (stderr) and the rest go on;
    `finish` raises BatchFailed when any item failed."""

    def __init__(self, what: str, where: str | Path) -> None:
        self.what, self.where, self.done, self.failed = what, where, 0, 0

    def run(self, name: str, job) -> bool:
        """Call job(); True if it succeeded. Expected errors are printed as `error: <name>: <why>`."""
        try:
            job()
        except EXPECTED_ERRORS as error:
            if debug_enabled(click.get_current_context(silent=True)):
                raise
            self.failed += 1
            click.echo(f"error: {name}: {describe(error)}", err=True)
            return False
        self.done += 1
        return True

    def finish(self) -> None:
        """Raise BatchFailed (with the count) if any item failed; nothing otherwise."""
        if self.failed:
            raise BatchFailed(self.what, self.where, self.failed, self.done + self.failed)
