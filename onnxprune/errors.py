"""The exceptions the CLI turns into a one-line error and an exit code."""


class OnnxPruneError(Exception):
    """A user-facing error: bad input, bad plan, or a model the tool will not vouch for (exit 2)."""


class NothingToDo(OnnxPruneError):
    """The run would write a model identical in structure to its input (exit 4 unless --allow-noop)."""
