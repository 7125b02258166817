"""Errors shared across packages, so that a package raising one need not import the module that checks it."""


class ParamsError(ValueError):
    """params.yaml is missing, unreadable, or holds a value that is not allowed."""
