"""Run docker-compose.yml's services as local processes, as the compose file declares them.

Used by test_compose_smoke.py. A service's command, environment and healthcheck are read from the
compose file and interpolated the way Docker Compose does (``${VAR}``, ``${VAR:-default}``, nested
defaults, ``${VAR:?error}``, ``$$``), from a test environment instead of the user's ``.env``. What a
container would provide is mapped onto this machine, and nothing else is changed:

- the compose network: host ``redis:6379`` -> ``127.0.0.1:<the test Redis port>``; listening on
  ``0.0.0.0`` -> ``127.0.0.1``; a service's container port -> a free local port;
- volumes: a mount target (``/models``) -> a local folder;
- the image: its scripts (``COPY docker/x.sh /usr/local/bin/name`` in the Dockerfiles) -> those
  files, ``aeq``/``celery`` -> this virtualenv, ``HOSTNAME`` -> this machine's hostname.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
VENV_BIN = Path(sys.executable).parent
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")
_INSTALLED_SCRIPT = re.compile(r"^COPY (?:--\S+ )*(docker/\S+) /usr/local/bin/(\S+)$", re.MULTILINE)


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is missing, as compose reports it."""


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise InterpolationError(f"unclosed ${{ in {text!r}")


def _expand(expression: str, environ: Mapping[str, str]) -> str:
    name = _NAME.match(expression)
    if not name:
        raise InterpolationError(f"bad variable in ${{{expression}}}")
    rest = expression[name.end() :]
    value = environ.get(name.group())
    if not rest:
        return value or ""
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(f"bad substitution ${{{expression}}}")
    argument = interpolate(rest[len(operator) :], environ)
    missing = value is None or (operator.startswith(":") and value == "")
    if operator.endswith("-"):
        return argument if missing else value or ""
    if operator.endswith("?"):
        if missing:
            raise InterpolationError(f"required variable {name.group()} is missing: {argument}")
        return value or ""
    return "" if missing else argument


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Substitute variables in ``text`` the way Docker Compose does."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "$" or index + 1 == len(text):
            out.append(char)
            index += 1
        elif text[index + 1] == "$":
            out.append("$")
            index += 2
        elif text[index + 1] == "{":
            end = _closing_brace(text, index + 1)
            out.append(_expand(text[index + 2 : end], environ))
            index = end + 1
        else:
            name = _NAME.match(text, index + 1)
            out.append(environ.get(name.group(), "") if name else "$")
            index = name.end() if name else index + 1
    return "".join(out)


def _interpolate_all(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, environ)
    if isinstance(value, list):
        return [_interpolate_all(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: _interpolate_all(item, environ) for key, item in value.items()}
    return value


def load_services(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Every service of the compose file, interpolated from ``environ`` (merge keys applied)."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return {name: _interpolate_all(spec, environ) for name, spec in compose["services"].items()}


def installed_scripts() -> dict[str, Path]:
    """Commands the Dockerfiles install into /usr/local/bin, mapped to their files here."""
    scripts: dict[str, Path] = {}
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        for source, name in _INSTALLED_SCRIPT.findall(dockerfile.read_text()):
            scripts[name] = ROOT / source
    return scripts


@dataclass
class LocalMapping:
    """How the containers' world maps onto this machine (see the module docstring)."""

    redis_port: int
    mounts: dict[str, Path] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)
    bin_dir: Path | None = None

    def text(self, value: str) -> str:
        """Map hostnames, listen addresses, container ports and mount paths inside ``value``."""
        value = value.replace("@redis:6379/", f"@127.0.0.1:{self.redis_port}/")
        value = value.replace("0.0.0.0", "127.0.0.1")
        for container_port, local_port in self.ports.items():
            value = re.sub(rf"(?<=[:=]){container_port}\b", str(local_port), value)
        for target, local in self.mounts.items():
            if value == target or value.startswith(f"{target}/"):
                value = str(local) + value[len(target) :]
        return value

    def argv(self, command: list[str]) -> list[str]:
        """A compose exec-form command as a local argv."""
        scripts = installed_scripts()
        mapped = [self.text(str(part)) for part in command]
        executable = mapped[0]
        if executable in scripts:
            mapped[0] = str(scripts[executable])
        elif (VENV_BIN / executable).exists():
            mapped[0] = str(VENV_BIN / executable)
        return mapped

    def healthcheck_argv(self, test: list[str]) -> list[str]:
        """A compose healthcheck ``test`` as a local argv (CMD-SHELL runs under sh -c)."""
        kind, *rest = test
        if kind == "CMD-SHELL":
            return ["sh", "-c", self.text(rest[0])]
        assert kind == "CMD", f"healthcheck kind {kind}"
        return self.argv(rest)

    def environment(self, service: dict[str, Any]) -> dict[str, str]:
        """The service's environment, mapped, plus what a container would have (PATH, HOSTNAME)."""
        path = [str(VENV_BIN), os.environ.get("PATH", "")]
        if self.bin_dir:
            path.insert(0, str(self.bin_dir))
        environ = {"PATH": os.pathsep.join(path), "HOSTNAME": socket.gethostname()}
        environ["HOME"] = os.environ.get("HOME", "/tmp")
        for key, value in (service.get("environment") or {}).items():
            environ[key] = self.text("" if value is None else str(value))
        return environ
