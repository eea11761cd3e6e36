"""`python -m common` == `zoo`."""

from common.cli import cli_main

cli_main()
