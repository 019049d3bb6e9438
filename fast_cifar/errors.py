"""One error type for problems the user can fix, and the CLI wrapper that prints it.

Anything raised as `UserError` reaches the terminal as a single line
(`error: ...`) with exit code 2. Everything else is a bug and keeps its traceback.
"""
import functools
import sys


class UserError(Exception):
    """Bad input: a missing or corrupt file, a bad config value, no network..."""


def exit_on_user_error(main):
    """Decorate a CLI entry point so a `UserError` ends it with one line, exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
