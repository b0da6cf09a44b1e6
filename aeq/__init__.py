"""aeq: denoise, reconstruct, encode and decode MNIST-style digits with ONNX autoencoders.

The Python API (``aeq.api``, docs/PYTHON.md)::

    import aeq
    clean = aeq.denoise(noisy)                      # a NumPy array in, a NumPy array out
    job = aeq.Client("redis://localhost:6379/0").submit("encode", "digits/")
    codes = job.results()

Every error aeq raises on purpose is an ``aeq.AeqError`` (``aeq.core.errors`` draws the tree).
Importing ``aeq`` is cheap: the errors only. The API (and NumPy with it) loads on the first use
of one of its names, so ``aeq status`` and the other commands do not pay for it at start;
ONNX Runtime, Pillow, redis and Celery load when a call needs them, TensorFlow never.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from aeq.core.errors import (
    AeqError,
    BrokerError,
    CollapsedModelError,
    DataUnavailableError,
    InputError,
    IntegrityError,
    JobError,
    JobNotFoundError,
    ModelError,
    ModelNotFoundError,
    OutputExistsError,
    ParityError,
    PayloadError,
    ProviderError,
    RepositoryError,
    StoreFullError,
    UsageError,
)

__all__ = [
    "AeqError",
    "BrokerError",
    "Client",
    "CollapsedModelError",
    "DataUnavailableError",
    "Images",
    "InputError",
    "IntegrityError",
    "Job",
    "JobError",
    "JobNotFoundError",
    "JobStatus",
    "ModelError",
    "ModelNotFoundError",
    "OutputExistsError",
    "ParityError",
    "PayloadError",
    "ProviderError",
    "RepositoryError",
    "StoreFullError",
    "UsageError",
    "__version__",
    "decode",
    "denoise",
    "encode",
    "models",
    "read_images",
    "reconstruct",
    "score",
]

if TYPE_CHECKING:  # what ``__getattr__`` hands out, for type checkers and editors
    from aeq.api import (
        Client,
        Images,
        Job,
        JobStatus,
        decode,
        denoise,
        encode,
        models,
        read_images,
        reconstruct,
        score,
    )

__version__: str


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":  # the Python API's (errors are loaded)
        value = getattr(import_module("aeq.api"), name)
        globals()[name] = value
        return value
    # The version is read from the installed package's metadata on first use: importing
    # importlib.metadata costs about as much as the rest of ``import aeq``.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("aeq")
        except PackageNotFoundError:  # a checkout on sys.path, never installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'aeq' has no attribute {name!r}")
