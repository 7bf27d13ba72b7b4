"""One exception type per user-facing failure. The CLI catches `CodecError` and prints one line."""


class CodecError(Exception):
    """Base class: a problem with the user's input or environment, reported without a traceback."""


class AudioError(CodecError):
    """An input that cannot be read as audio, or audio that cannot be encoded (empty, NaN, inf)."""


class CodesFileError(CodecError):
    """A .codes file that is corrupt, truncated, foreign, or made by another model."""


class CodesError(CodecError, ValueError):
    """Codes a model cannot decode: an id outside its codebook (-1, a dropped stage, aside)."""


class StreamError(CodecError, ValueError, RuntimeError):
    """A stream pushed after it ended, with another batch size, or with audio at another rate."""


class ModelError(CodecError):
    """A weights file or model name that cannot be loaded."""


class OutputError(CodecError):
    """An output path that exists (without --force) or cannot be written."""


class ConfigError(CodecError):
    """A configuration file with unknown keys or wrong types."""


class MetricUnavailable(CodecError):
    """A metric whose package, weights or checkpoint is not installed; the message says how to get it."""


class BaselineUnavailable(CodecError):
    """A classic codec baseline whose command-line tools are not installed; the message names the package."""


def printable(text: str) -> str:
    """`text` with control characters escaped (\\n, \\x1b, ...): a name read from a file may hold a newline or a
    terminal escape, which printed raw would break the one-line message or act on the user's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
