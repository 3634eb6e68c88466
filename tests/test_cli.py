from typer.testing import CliRunner

from iterview.cli import app


def test_help_lists_the_app():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "iterview" in result.output or "3D-aware" in result.output
