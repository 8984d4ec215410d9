"""The study's user-facing errors: each is printed as one line on stderr, exit status 2, with
nothing written (study/run.py catches them; any other exception is a bug)."""


class UsageError(ValueError):
    """Bad input: a value on the command line, in a file it names, or the data it points at."""


class ClusterError(UsageError):
    """A cluster file, address, token or storage problem."""
