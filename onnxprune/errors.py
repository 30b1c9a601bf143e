"""The exceptions the CLI turns into a one-line error and an exit code."""


class OnnxPruneError(Exception):
    """A user-facing error: bad input, bad plan, or a model the tool will not vouch for (exit 2)."""


class NothingToDo(OnnxPruneError):
    """The run would write a model identical in structure to its input (exit 4 unless --allow-noop)."""


class TargetMissed(OnnxPruneError):
    """A speed target the measured results do not reach (exit 5: not bad input, a fact about the model)."""
