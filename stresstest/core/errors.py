"""The one exception type that stages turn into a one-line message (see cli.run_main)."""


class UserError(Exception):
    """A mistake the user can fix. Its message is one line: what is wrong and how to fix it."""


def first_line(error: BaseException) -> str:
    """An exception's message, first line only and at most 200 characters (for one-line errors)."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
