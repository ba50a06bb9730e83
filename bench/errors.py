"""The one exception type for mistakes a user can make.

Bad config values, unknown names, missing or corrupt data: raise `UserError` with a message that
says what is wrong and how to fix it. The command line catches it once, prints the message as one
line and exits with status 2. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, reported as one line and exit status 2."""
