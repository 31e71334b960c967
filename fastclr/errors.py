"""Errors a person can fix: one line that names the argument and the fix, exit status 2 at the CLI.

Library code raises `UsageError` (a ValueError, so `except ValueError` in user code still catches
it) for bad arguments, bad config values, unusable files or folders and missing optional tools.
`fastclr.cli.main` prints it as `fastclr <command>: error: <message>` without a traceback. Anything
else is a bug and keeps its traceback.
"""


class UsageError(ValueError):
    """A bad input or environment that the user can fix; the message says how, on one line."""
