"""What a worker accepts from the queue: every message is checked before Celery unpacks it.

Celery's consumer hands each message to its task's strategy, which assumes the body is Celery's
``(args, kwargs, embed)``: a body that decodes to anything else (msgpack ``None``, ``12345``,
``[1]``, a map without ``args``) raises ``TypeError`` or ``ValueError`` inside the consumer,
Celery calls that unrecoverable and exits, and the unacknowledged message is restored to the
head of the queue for the next worker to die on (celery/celery#7975, #4308). The same holds for
Celery's built-in tasks (``celery.accumulate`` ...), which every worker registers, and for a
protocol-1 message without an ``id``.

``CheckedConsumer`` (Celery's ``worker_consumer`` setting) puts ``refusal`` in front of Celery's
own message handler: one check for every message on the task queue, whatever task it names, in
the process that holds the broker connection (the main process, with the solo pool and prefork
alike), before any strategy or request object sees it. A message it refuses is acknowledged and
kept as a dead letter (``aeq.queue.dead_letters``), and the worker goes on with the next one.

Accepted is exactly what aeq's client sends: a protocol-2 message for ``aeq.run_chunk`` with an
``id``, in a content type the app accepts (msgpack or JSON; a pickle is refused by its content
type and never loaded), whose body is ``([], {name: value, ...}, {callbacks: None, ...})``.
Whether the keyword arguments make a chunk message is the task's business
(``worker.processing``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import redis
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import prepare_accept_content

from aeq.queue.dead_letters import DeadLetter, DeadLetters
from aeq.queue.protocol import TASK_NAME
from aeq.queue.store import connect
from worker import app as app_module

logger = logging.getLogger(__name__)

# The only task an aeq worker runs; messages for any other (Celery's built-ins included) are not
# for this queue.
SERVED_TASKS = frozenset({TASK_NAME})
# Headers Celery's request reads as text (or leaves unset).
_TEXT_HEADERS = ("shadow", "group", "root_id", "parent_id", "eta", "expires")
_REPR_CHARS = 80


class CheckedConsumer(Consumer):
    """Celery's consumer with every task message checked first; refusals become dead letters."""

    _dead_letters: DeadLetters | None = None

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        celery_handler = super().create_task_handler(*args, **kwargs)
        accepted = prepare_accept_content(self.app.conf.accept_content)

        def on_task_received(message: Any) -> Any:
            reason = refusal(message, accepted)
            if reason is not None:
                return self.refuse(message, reason)
            return celery_handler(message)

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """A body kombu could not even turn into a message (e.g. bad compression)."""
        self.refuse(message, f"message does not decode: {_error_text(exc)}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        """What Celery itself refuses after our check (e.g. an ETA that is not a date)."""
        self.refuse(message, f"Celery refused the message: {_error_text(exc)}")

    def refuse(self, message: Any, reason: str) -> None:
        """Keep ``message`` as a dead letter and acknowledge it."""
        headers = getattr(message, "headers", None)
        task_id = headers.get("id") if isinstance(headers, Mapping) else None
        logger.warning("dead letter (task id %r): %s", task_id, reason)
        letter = DeadLetter.of(
            reason,
            self.hostname,
            headers,
            getattr(message, "body", None),
            getattr(message, "content_type", None),
        )
        try:
            self._letters().keep(letter)
        except redis.RedisError as error:
            # The result store is down while the broker is up: the log line above is all that
            # is left of the message; handing it back would only loop on it.
            logger.error("could not store the dead letter (%s); it is dropped", error)
        if hasattr(message, "ack_log_error"):
            message.ack_log_error(logger, self.connection_errors)

    def _letters(self) -> DeadLetters:
        if self._dead_letters is None:
            url = app_module.settings.results_url or ""
            self._dead_letters = DeadLetters(connect(url, check=False))
        return self._dead_letters


def refusal(message: Any, accepted: set[str]) -> str | None:
    """Why ``message`` cannot be run as an aeq task, or None if Celery may unpack it.

    Args:
        message: the kombu message as received.
        accepted: the content types the app accepts (``prepare_accept_content`` of its
            ``accept_content``); the body is decoded only if its type is among them.
    """
    headers = message.headers
    if not isinstance(headers, Mapping) or "task" not in headers:
        return "not a Celery protocol 2 task message (no task header)"
    task = headers["task"]
    if not isinstance(task, str) or task not in SERVED_TASKS:
        return f"task {_repr(task)} is not served here (only {TASK_NAME})"
    problem = _header_problem(headers)
    if problem is not None:
        return problem
    message.accept = accepted
    try:
        body = message.decode()
    except ContentDisallowed as error:  # raised before the body is looked at
        return f"{error}; accepted: {', '.join(sorted(accepted))}"
    except DecodeError as error:
        return f"body does not decode as {message.content_type}: {_error_text(error)}"
    return _body_problem(body)


def _header_problem(headers: Mapping[str, Any]) -> str | None:
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        return f"header id must be a non-empty string, got {_repr(task_id)}"
    for name in _TEXT_HEADERS:
        if headers.get(name) is not None and not isinstance(headers[name], str):
            return f"header {name} must be a string, got {_repr(headers[name])}"
    if not _is_time_limit(headers.get("timelimit")):
        return f"header timelimit must be [hard, soft] seconds, got {_repr(headers['timelimit'])}"
    return None


def _is_time_limit(value: Any) -> bool:
    if value is None:
        return True
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(_is_number_or_none(limit) for limit in value)
    )


def _is_number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _body_problem(body: Any) -> str | None:
    if not isinstance(body, list | tuple) or len(body) != 3:
        return f"body is {_repr(body)}, not Celery's (args, kwargs, embed)"
    args, kwargs, embed = body
    if not isinstance(args, list | tuple) or args:
        return f"{TASK_NAME} takes keyword arguments only, got args {_repr(args)}"
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        return f"kwargs must map names to values, got {_repr(kwargs)}"
    if not isinstance(embed, Mapping):
        return f"embed must be a mapping, got {_repr(embed)}"
    # Callbacks, errbacks, chains and chords would have the worker send further messages.
    used = sorted(str(key) for key, value in embed.items() if value)
    if used:
        return f"{TASK_NAME} takes no callbacks or chains, got {', '.join(used)}"
    return None


def _repr(value: Any) -> str:
    return _cut(repr(value))


def _error_text(error: BaseException) -> str:
    """The error's first line; kombu's wrappers (DecodeError) name the error they wrap."""
    cause = error.args[0] if len(error.args) == 1 else None
    if isinstance(cause, BaseException):
        error = cause
    text = str(error)
    return _cut(text.splitlines()[0] if text else type(error).__name__)


def _cut(text: str) -> str:
    return text if len(text) <= _REPR_CHARS else text[: _REPR_CHARS - 3] + "..."
