"""The rich consoles of the CLI: results go to stdout, messages and errors to stderr."""

from rich.console import Console
from rich.markup import escape

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # messages never wrap: paths stay whole


def fail_line(prefix: str, message: str) -> None:
    """Print an error as exactly one line on stderr."""
    text = escape(" ".join(str(message).split()))  # brackets in messages are text, not markup
    err.print(f"[bold red]{prefix}: error:[/] {text}", markup=True, soft_wrap=True)


def print_command(command: str) -> None:
    """A command for the user to run next: indented, never wrapped, no markup (copy-pastable)."""
    err.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)
