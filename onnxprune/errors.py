"""The one exception type the CLI turns into a one-line error."""


class OnnxPruneError(Exception):
    """A user-facing error: bad input, bad plan, or a model the tool will not vouch for."""
