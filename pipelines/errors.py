"""Errors the command line turns into one-line messages (kept free of heavy imports)."""


class LeakError(RuntimeError):
    """Something is on two sides of the split: the build must not be published."""
