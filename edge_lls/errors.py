"""User-facing errors. The CLI prints their message on one line and exits with status 2."""


class EdgeLLSError(Exception):
    """Bad input from the user: a file, field or value. The message names it."""


class DataError(EdgeLLSError):
    """A dataset file is missing, truncated, or does not match its format."""


class FormatError(EdgeLLSError):
    """A model file (ours, .tflite, .onnx) is malformed or uses something unsupported."""


class ConfigError(EdgeLLSError):
    """An unknown model, rule, dataset, device, or an invalid option value."""


class DivergedError(EdgeLLSError):
    """Training produced a NaN or infinite loss."""


class FormatWarning(UserWarning):
    """A file that still loads but should be rewritten (e.g. a .ells file without checksums)."""
