"""`python -m iterview` runs the command line (also what `accelerate launch -m iterview` needs)."""

from iterview.cli import app

app()
