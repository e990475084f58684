"""The one error class for what the user can fix (a flag, a file, the data, the environment):
the boot files answer it with one log line and exit status 2. Every other exception is a bug
(ours or a library's) and keeps its traceback in the log."""


class UserError(ValueError):
    """Something the user gave is wrong; the message says what, where, and what to do."""
