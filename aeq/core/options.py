"""Command-line options that several commands take, declared once so they read and act the same.

``--repository`` names the model repository; like every setting it has an environment variable
(``AEQ_MODEL_REPOSITORY``), read by ``aeq.core.settings`` alone: a command passes the option to
``Settings.with_overrides``. ``--json`` makes a command print one JSON document on stdout (for
scripts) and everything meant for people on stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RepositoryOption = Annotated[
    Path | None,
    typer.Option(
        "--repository",
        help="Model repository (default: AEQ_MODEL_REPOSITORY, else ./model_repository).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout, for scripts.")
]
