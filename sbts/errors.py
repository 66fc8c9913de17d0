"""User-facing errors.

Anything the user can fix (a bad file, a bad value, an unknown name) raises ``SBTSError`` with a
one-line message naming the file, line or value. The CLI turns it into that line on stderr and
exit code 2; library callers can catch it (it is also a ``ValueError``).
"""


def one_line(text: object) -> str:
    """Collapse whitespace so that a message always stays on one line."""
    return " ".join(str(text).split())


class SBTSError(ValueError):
    """An input problem the user can fix; the message is one line and names the culprit."""


class DataError(SBTSError):
    """A dataset file is missing, unreadable or malformed."""


class InputTypeError(DataError, TypeError):
    """Input that is not numbers at all (scikit-learn's conventions expect a TypeError there)."""


class ConfigError(SBTSError):
    """A configuration value is out of range or unknown."""


class CheckpointError(SBTSError):
    """A checkpoint or run directory is corrupted, foreign or incompatible."""


class ArtifactError(SBTSError):
    """An exported model file that cannot be trusted: not one, truncated, corrupted, tampered or too new."""


class TrainingDivergedError(SBTSError):
    """The training loss became NaN or infinite (usually: the learning rate is too high)."""
