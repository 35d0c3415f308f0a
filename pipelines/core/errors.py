"""The errors a user can fix. The CLI prints their message as one line; any other exception is a bug in the
project or a library, and `--debug` (or `PIPELINES_DEBUG=1`) shows its traceback."""


class PipelineError(Exception):
    """A problem the user can fix: the message names the key, file, row or stage and what to do."""


class ConfigError(PipelineError, ValueError):
    """A config key or value that breaks a rule; the message names the key path."""


class DataError(PipelineError, ValueError):
    """Input data that cannot be used as it is; the message names the file, row or field."""


class StageError(PipelineError, RuntimeError):
    """A stage cannot run now (an upstream stage has not run, no champion is registered, ...)."""
