"""`python -m stealkit ...`: the same command line as the `stealkit` script (for machines where it is not on PATH)."""

from stealkit.cli import app

app(prog_name="stealkit")
