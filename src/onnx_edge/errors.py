"""Exception types for user mistakes: the CLI prints them as one line, never a traceback."""


class EdgeError(Exception):
    """Base of every error caused by input the user can fix (bad path, bad option, bad file)."""


class SourceError(EdgeError):
    """The model source cannot be found, fetched or read."""


class UnsupportedModelError(EdgeError):
    """The model's architecture or a feature of it is not supported."""


class ManifestError(EdgeError):
    """A model folder's manifest is missing, malformed, of another schema, or disagrees with the files."""


class IntegrityError(ManifestError):
    """A file in a model folder does not match the size or sha256 recorded in its manifest."""


class ValidationError(EdgeError):
    """The exported ONNX graph does not reproduce the PyTorch model."""


class ProviderError(EdgeError):
    """The requested onnxruntime execution provider is not installed or not usable."""


class GenerationError(EdgeError):
    """Invalid generation request: bad sampling values, empty or over-long prompt."""


class OutputError(EdgeError):
    """The output location cannot be written (exists, is a file, not writable)."""
