"""The `likeness` command line: one Typer module per command group; each parses its arguments,
calls the library and renders the result (rich for people, `--json` for scripts)."""
