"""One exception type for every user-facing problem, so the CLI can print it without a traceback."""


class CaffeError(Exception):
    """A problem in a user's net, solver, weights or data, phrased so the user can fix it."""
