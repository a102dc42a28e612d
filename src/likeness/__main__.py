"""`python -m likeness` is the `likeness` command."""

from likeness.cli.main import main

main()
