"""Errors that speak the user's language: each says what is wrong and how to fix it."""


class UsegError(Exception):
    """Base class of every error useg reports to the user without a traceback."""


class DataError(UsegError):
    """The dataset on disk is unusable (corrupt files, wrong sizes, empty folders)."""


class ConfigError(UsegError):
    """A configuration value is invalid."""


class WeightsError(UsegError):
    """Backbone weights are missing or do not fit the model."""


class StoreError(UsegError):
    """An artifact store is missing, incomplete or of the wrong kind."""


class TrainingError(UsegError):
    """Training diverged (NaN/inf loss) or cannot proceed."""


def check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise ConfigError naming `key` when `value` is not one of `choices`."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
