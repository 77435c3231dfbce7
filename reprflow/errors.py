"""User-facing errors. Every message names the culprit, what was got, and the fix."""


class ReprflowError(Exception):
    """Base class: an error the user can act on (bad input, missing model, corrupt store)."""


class ConfigError(ReprflowError):
    """The config is invalid; the message names the key."""


class ModelNotFoundError(ReprflowError):
    """A model id or path could not be loaded (unknown, or unreachable offline)."""


class StoreError(ReprflowError):
    """An activation store is missing, incomplete or inconsistent."""


class PromptError(ReprflowError):
    """A prompt source file is missing or malformed, or calibration failed."""
