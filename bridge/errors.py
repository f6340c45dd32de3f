"""Errors a user can cause and fix.  The CLI prints their message as one line, no traceback."""


class UserError(Exception):
    """A mistake in input (a flag, a prompt, a preset, a path).  The message is shown as is."""


class ModelError(UserError):
    """The model could not be found or loaded (wrong path, missing hub access, bad checkpoint)."""


class InvalidRequest(UserError):
    """A generation or control request with a bad value (negative steps, NaN guidance, …)."""
