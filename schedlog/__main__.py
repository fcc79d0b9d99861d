"""`python -m schedlog`: the command line (front door)."""

from __future__ import annotations

from schedlog.cli import main

main(prog_name="schedlog")
