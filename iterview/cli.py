"""The `iterview` command line: one Typer app with a subcommand per job."""

from __future__ import annotations

import typer

from iterview import demo
from iterview.data import commands as data_commands
from iterview.errors import DEBUG_KEY, ErrorBoundary
from iterview.eval import commands as eval_commands
from iterview.models.commands import convert
from iterview.pipeline import commands as pipeline_commands
from iterview.render import commands as render_commands
from iterview.training.commands import train_command
from iterview.webapp.commands import app_command

app = typer.Typer(
    help="3D-aware image generation with 2D diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=ErrorBoundary,
)

app.command(help="Convert an official ivid checkpoint (.pt + JSON config) to our safetensors format.")(convert)


@app.callback()
def main(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of every error (or ITERVIEW_DEBUG=1)."),
) -> None:
    """iterview: data preparation, training, multi-view sampling, lifting photos, rendering, export and evaluation.

    Bad input, a missing file or mismatched models end with one line `error: ...` and exit code 2."""
    ctx.meta[DEBUG_KEY] = debug


app.command("prepare")(data_commands.prepare)
app.command("synth")(data_commands.synth)
app.command("train")(train_command)
app.command("sample")(pipeline_commands.sample)
app.command("render")(render_commands.render)
app.command("export")(render_commands.export)
app.command("lift")(pipeline_commands.lift)
app.command("eval")(eval_commands.evaluate)
app.command("demo")(demo.demo)
app.command("app")(app_command)

if __name__ == "__main__":
    app()
