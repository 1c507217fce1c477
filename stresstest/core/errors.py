"""The one exception type that stages turn into a one-line message (see cli.run_main)."""


class UserError(Exception):
    """A mistake the user can fix. Its message is one line: what is wrong and how to fix it."""
