"""`python -m ca_server` = `ca-server`."""

from .cli import main

main(prog_name="ca-server")
