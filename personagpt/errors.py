"""User-facing errors. Every one of them means: bad input, exit code 2, a message naming what is wrong."""

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
