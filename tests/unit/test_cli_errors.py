"""How the CLI reports a Redis error that happens mid-command: one line, no quoted payload."""

from __future__ import annotations

import redis

from cli import redis_reason


def test_a_pipeline_error_keeps_the_servers_reason_not_the_command():
    error = redis.exceptions.OutOfMemoryError(
        "Command # 1 (SET aeq:job:{abc}:in:41 x \x00\x01\xff...) of pipeline caused error: "
        "command not allowed when used memory > 'maxmemory'."
    )
    assert redis_reason(error) == "command not allowed when used memory > 'maxmemory'."


def test_the_reason_is_one_line_and_safe_for_rich_markup():
    error = redis.exceptions.ConnectionError("Connection closed by server.\n[bold]more[/bold]")
    reason = redis_reason(error)
    assert reason == "Connection closed by server." and "\n" not in reason
    assert redis_reason(redis.exceptions.ConnectionError("[red]x")) == "\\[red]x"
    assert redis_reason(redis.exceptions.TimeoutError()) == "TimeoutError"
