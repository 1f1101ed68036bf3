"""The rich consoles of the CLI: results go to stdout, messages and errors to stderr."""

import os
import sys

from rich.console import Console
from rich.markup import escape

#: Tables written to a file or pipe are laid out this wide (rich's default, 80 columns, folds
#: recipe and zoo names mid-word, which makes them impossible to copy).
FILE_WIDTH = 200

out = Console(
    highlight=False,
    width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else FILE_WIDTH,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # messages never wrap: paths stay whole


def fail_line(prefix: str, message: str) -> None:
    """Print an error as exactly one line on stderr."""
    text = escape(" ".join(str(message).split()))  # brackets in messages are text, not markup
    err.print(f"[bold red]{prefix}: error:[/] {text}", markup=True, soft_wrap=True)


def print_command(command: str) -> None:
    """A command for the user to run next: indented, never wrapped, no markup (copy-pastable)."""
    err.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)
