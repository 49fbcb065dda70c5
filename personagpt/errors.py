"""User-facing errors: each is printed as `error: MESSAGE` (naming the file, row or key) and exits with its code:
2 for bad input, 1 for a failed pipeline stage."""

EXIT_USAGE = 2


class PersonaGPTError(Exception):
    """Bad input from the user (file, row, config key, request). The CLI prints it and exits with code 2."""

    exit_code = EXIT_USAGE


class ConfigError(PersonaGPTError):
    """A config file or override is invalid; the message names the file and the key."""


class DataError(PersonaGPTError):
    """An input data file is malformed; the message names the file, the line/row and the column/key."""


class ArtifactError(PersonaGPTError):
    """An artifact folder is missing, incomplete or of the wrong kind."""


class StageFailed(PersonaGPTError):
    """A pipeline stage failed (its own error and the tail of its log are in the message): exit code 1."""

    exit_code = 1
