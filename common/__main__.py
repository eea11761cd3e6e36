"""`python -m common` == `zoo`."""

from common.cli import cli_main

if __name__ == "__main__":  # spawned worker processes re-import the main module under another name
    cli_main()
