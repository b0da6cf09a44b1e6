"""aeq's command line: a thin Typer layer over the packages that do the work.

Each stage registers its own commands (``register(app)`` in its ``commands`` module). Those modules
import TensorFlow, ONNX Runtime or Celery only inside the commands that need them, so ``aeq --help``
is quick and the job-submitting commands never load TensorFlow.
"""

from __future__ import annotations

import sys
from typing import Any

import redis
import typer
from rich.console import Console
from rich.markup import escape

import aeq.bench.commands
import aeq.client.commands
import aeq.demo
import aeq.evaluation.commands
import export.commands
import training.commands
from aeq.core.errors import AeqError

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class _App(typer.Typer):
    """Typer app that turns every ``AeqError`` into one line on stderr and its exit code."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except AeqError as error:
            _stderr.print(f"[bold red]error:[/] {error}")
            sys.exit(error.exit_code)
        except redis.RedisError as error:  # mid-command: a dropped connection, a refused write
            _stderr.print(f"[bold red]error:[/] Redis: {redis_reason(error)}")
            sys.exit(1)
        except KeyboardInterrupt:
            _stderr.print("interrupted")
            sys.exit(130)


def redis_reason(error: redis.RedisError) -> str:
    """The server's or the socket's reason, without the command redis-py quotes from a pipeline
    (which for a chunk's SET is 400 KB of pixels)."""
    text = str(error)
    text = text.split(" of pipeline caused error: ", 1)[-1]
    return escape(text.splitlines()[0][:300] if text else type(error).__name__)


app = _App(
    name="aeq",
    help="Train autoencoders, export them to ONNX, and run batch jobs on them.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

for stage in (
    training.commands,
    export.commands,
    aeq.client.commands,
    aeq.evaluation.commands,
    aeq.bench.commands,
    aeq.demo,
):
    stage.register(app)


if __name__ == "__main__":
    app()
