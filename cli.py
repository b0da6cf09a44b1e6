"""aeq's command line: a thin Typer layer over the packages that do the work.

Each stage registers its own commands (``register(app)`` in its ``commands`` module). Those modules
import TensorFlow, ONNX Runtime, Celery and redis-py only inside the commands that need them, so
``aeq --help`` is quick and the job-submitting commands never load TensorFlow.

Every way a command can fail on purpose ends the same way: one line ``error: …`` on stderr and an
exit code (2 for what the user asked, 1 for the rest). That holds for Click's own usage errors
(an unknown option, a missing argument, a value out of range) as well as aeq's (``AeqError``) and
a Redis connection dropped mid-command.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from aeq.core.errors import AeqError

HELP_OPTIONS = ["-h", "--help"]

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)
# Typer raises Click's exceptions; since Typer 0.29 from its own copy of Click. The base class is
# found from a public subclass rather than imported from a private module.
_ClickException: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
)


class AeqGroup(TyperGroup):
    """The ``aeq`` command group: whatever a command fails with on purpose becomes one line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; exit with the command's code, or print one line and exit."""
        run = functools.partial(
            super().main, args, prog_name, complete_var, False, windows_expand_args, **extra
        )
        if not standalone_mode:
            return run()
        try:
            code = run()
        except _ClickException as error:
            code = _usage_error(error)
        except typer.Abort:
            code = _fail("aborted", 1)
        except AeqError as error:
            code = _fail(escape(str(error)), error.exit_code)
        except Exception as error:
            if not _is_redis_error(error):
                raise  # a fault in aeq: Typer shows the traceback
            code = _fail(f"Redis: {redis_reason(error)}", 1)  # mid-command: a dropped connection
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> int:
    _stderr.print(f"[bold red]error:[/] {message}")
    return code


def _usage_error(error: Any) -> int:
    """Click's usage errors as one line naming the help to read (Click draws a boxed paragraph)."""
    if type(error).__name__ == "NoArgsIsHelpError":  # bare ``aeq``: the message is the help
        typer.echo(error.format_message(), err=True)
        return int(error.exit_code)
    message = error.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    context = getattr(error, "ctx", None)
    if context is not None:
        message += f"; see '{context.command_path} -h'"
    return _fail(escape(message), int(error.exit_code))


def _is_redis_error(error: Exception) -> bool:
    # redis-py is imported only by the commands that talk to Redis; if it is not loaded, the
    # error cannot be one of its own.
    redis_module = sys.modules.get("redis")
    return redis_module is not None and isinstance(error, redis_module.RedisError)


def redis_reason(error: Exception) -> str:
    """The server's or the socket's reason, without the command redis-py quotes from a pipeline
    (which for a chunk's SET is 400 KB of pixels)."""
    text = str(error)
    text = text.split(" of pipeline caused error: ", 1)[-1]
    return escape(text.splitlines()[0][:300] if text else type(error).__name__)


def _print_version(value: bool) -> None:
    if value:
        import aeq

        typer.echo(f"aeq {aeq.__version__}")  # from the package metadata, read on first use
        raise typer.Exit()


app = typer.Typer(
    name="aeq",
    cls=AeqGroup,
    no_args_is_help=True,
    context_settings={"help_option_names": HELP_OPTIONS},
    # Click's plain help: flags read as flags (Typer's rich panels print '--json <bool>') and it
    # needs no rich.markdown, which keeps 'aeq -h' quick.
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print aeq's version and exit.",
        ),
    ] = False,
) -> None:
    """Train autoencoders, export them to ONNX, and run batch jobs on them."""


# The commands of each side, in --help order. The last three come with the train/eval extras (the
# worker image leaves them out): where they are not installed, their commands are not offered.
STAGES = (
    "training.commands",
    "export.commands",
    "aeq.client.commands",
    "worker.commands",
    "aeq.samples",
    "aeq.evaluation.commands",
    "aeq.bench.commands",
    "aeq.demo",
)
OPTIONAL_STAGES = ("aeq.evaluation", "aeq.bench", "aeq.demo")


# Which stage registers each command. 'aeq COMMAND ...' imports only that stage: a command, or its
# help, needs nothing of the others, and their imports are most of the start-up time.
# tests/unit/test_cli_conventions.py checks this against what each stage registers.
COMMAND_STAGES = {
    "train": "training.commands",
    **dict.fromkeys(("export", "models", "triton"), "export.commands"),
    **dict.fromkeys(
        (
            "denoise",
            "reconstruct",
            "encode",
            "decode",
            "score",
            "status",
            "results",
            "cancel",
            "jobs",
            "dead-letters",
        ),  # fmt: skip
        "aeq.client.commands",
    ),
    "worker": "worker.commands",
    "samples": "aeq.samples",
    "evaluate": "aeq.evaluation.commands",
    "bench": "aeq.bench.commands",
    "demo": "aeq.demo",
}
# The installed entry point's name: only its command line is read to pick stages (an importer of
# ``cli`` such as a test gets every stage).
ENTRY_POINT = "aeq"


def stages_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The stage modules to import for the command line ``argv``: the one that owns the named
    command; all of them for ``aeq -h``, shell completion, an unknown command, or when ``cli``
    is imported by something other than the ``aeq`` entry point."""
    if len(argv) < 2 or Path(argv[0]).name != ENTRY_POINT:
        return STAGES
    stage = COMMAND_STAGES.get(argv[1])
    return (stage,) if stage else STAGES


def _register_stages(app: typer.Typer, stages: Sequence[str] = STAGES) -> None:
    for name in stages:
        try:
            stage = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is None or not error.name.startswith(OPTIONAL_STAGES):
                raise
            continue
        stage.register(app)


_register_stages(app, stages_for(sys.argv))


if __name__ == "__main__":
    app()
