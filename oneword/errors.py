"""User-facing errors: one line that names the file or option and says what to do."""


class OnewordError(Exception):
    """An error the CLI prints as one line (no traceback) and exits with status 2."""


class WriteFailed(OnewordError):
    """A file or the store could not be written (a full disk, most often); what was written
    before is intact, so the command can be run again once there is room."""


class Interrupted(OnewordError):
    """The user stopped a command (Ctrl-C) after it saved what it had: it can be resumed."""
