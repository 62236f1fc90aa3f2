"""User-facing errors: one line that names the file or option and says what to do."""


class OnewordError(Exception):
    """An error the CLI prints as one line (no traceback) and exits with status 2."""
