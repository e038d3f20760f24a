"""`python -m edgefn`: the same as the `edgefn` command."""

from edgefn.cli.main import main

main()
