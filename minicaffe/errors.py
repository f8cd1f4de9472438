"""One exception type for every user-facing problem, so the CLI can print it without a traceback."""


class CaffeError(RuntimeError):
    """A problem in a user's net, solver, weights or data, phrased so the user can fix it (a
    RuntimeError, as pycaffe raises for a missing file or a bad net)."""
