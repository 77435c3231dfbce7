"""User-facing errors. Every message names the culprit, what was got, and the fix."""


class ReprflowError(Exception):
    """Base class: an error the user can act on (bad input, missing model, corrupt store)."""


class ConfigError(ReprflowError):
    """The config is invalid; the message names the key."""


class ModelNotFoundError(ReprflowError):
    """A model id or path could not be loaded (unknown, or unreachable offline)."""


class StoreError(ReprflowError):
    """An activation store is missing, incomplete or inconsistent."""


class StoreWarning(UserWarning):
    """A store can be read but not fully trusted (e.g. written without chunk checksums)."""


class PromptError(ReprflowError):
    """A prompt source file is missing or malformed, or calibration failed."""


class InvalidParameterError(ConfigError, ValueError):
    """A parameter is out of its documented range (scikit-learn style message).

    Subclasses both :class:`ConfigError` and :class:`ValueError`, so callers may catch either.
    """


class UnknownMetricError(ConfigError, KeyError):
    """A metric name that is not in :data:`reprflow.metrics.METRICS` (also a KeyError, so Mapping works)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])
