import click
import typer.main
from rich.text import Text
from typer.testing import CliRunner

from iterview.cli import app


def test_help_lists_the_app():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "iterview" in result.output or "3D-aware" in result.output


def _help_texts(command: click.Command, name: str = "iterview"):
    yield name, command.help or ""
    for param in command.params:
        yield f"{name} {param.name}", getattr(param, "help", None) or ""
    for sub, child in getattr(command, "commands", {}).items():
        yield from _help_texts(child, f"{name} {sub}")


def test_every_help_text_shows_as_written():
    # --help renders help texts as Rich markup, where "[word ...]" is a style tag that silently vanishes.
    texts = dict(_help_texts(typer.main.get_command(app)))
    assert len(texts) > 100 and "iterview lift overwrite" in texts
    changed = {where: text for where, text in texts.items() if Text.from_markup(text).plain != text}
    assert not changed, changed
    result = CliRunner().invoke(app, ["sample", "--help"], env={"COLUMNS": "200"})
    assert "Field of view in degrees (official: 45)." in result.output
