"""Errors a user can meet. The CLI prints them as one line and exits with `exit_code`."""


class UserError(Exception):
    """Something the user can fix: a bad argument, a bad file, a busy port."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
