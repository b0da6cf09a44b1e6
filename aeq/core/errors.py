"""The errors aeq raises on purpose.

Every error a user can meet is an ``AeqError``; the CLI prints its message as one line and exits
with its ``exit_code`` (2 for problems with what the user asked for, 1 for everything else).

    AeqError
    ├── UsageError              bad arguments or options                         (exit 2)
    ├── DataUnavailableError    no MNIST source could be found                   (exit 2)
    ├── InputError              an input file or array aeq cannot use            (exit 2)
    ├── OutputExistsError       the output is there already and --overwrite not given (exit 2)
    ├── ModelError
    │   ├── ModelNotFoundError  unknown model or version, or nothing published yet
    │   ├── IntegrityError      a model file does not match its recorded sha256
    │   ├── CollapsedModelError training ended no better than predicting the mean image
    │   └── ParityError         ONNX Runtime and Keras disagree beyond tolerance
    ├── RepositoryError         the model repository is unusable
    ├── ProviderError           the required execution provider is not in use
    ├── BrokerError             Redis / the broker cannot be reached
    │   └── StoreFullError      Redis is at its maxmemory and refuses to store more
    └── JobError
        ├── JobNotFoundError    no such job (or its results have expired)
        └── PayloadError        a chunk payload failed validation in the worker
"""

from __future__ import annotations


class AeqError(Exception):
    """Base of every error aeq raises on purpose; its message is meant for the user."""

    exit_code = 1


class UsageError(AeqError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


class DataUnavailableError(AeqError):
    """No training/test data could be found in any of the places aeq looks."""

    exit_code = 2


class InputError(AeqError):
    """An input file or array is unreadable, malformed or of the wrong size."""

    exit_code = 2


class OutputExistsError(AeqError):
    """The output path exists and the user did not ask to overwrite it."""

    exit_code = 2


class ModelError(AeqError):
    """Something is wrong with a model: missing, tampered, collapsed or not faithful."""


class ModelNotFoundError(ModelError):
    """The model or version asked for is not in the repository."""

    exit_code = 2


class IntegrityError(ModelError):
    """A model file's sha256 differs from the one recorded when it was published."""


class CollapsedModelError(ModelError):
    """Training ended no better than predicting the mean training image."""


class ParityError(ModelError):
    """An exported ONNX graph disagrees with its Keras model beyond tolerance."""


class RepositoryError(AeqError):
    """The model repository cannot be read or written."""


class ProviderError(AeqError):
    """The execution provider required (e.g. CUDA with --require-gpu) is not the one in use."""


class BrokerError(AeqError):
    """The broker or result store cannot be reached."""


class StoreFullError(BrokerError):
    """Redis is at (or too near) its maxmemory to store what was asked."""


class JobError(AeqError):
    """A job cannot be submitted, followed or collected."""


class JobNotFoundError(JobError):
    """No job with that id exists (or its results have expired)."""

    exit_code = 2


class PayloadError(JobError):
    """A chunk payload failed validation; the chunk fails with this reason."""
