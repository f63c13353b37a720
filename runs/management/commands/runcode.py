"""`manage.py runcode`: run one program through the configured sandbox backend, print the result JSON.

No database and no queue are touched: this is for operators checking a host and for testing the sandbox.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, ClassVar

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.sandbox import get_sandbox
from sandbox import InvalidSpec, RunSpec, SandboxUnavailable, get_language, resolve_limits


class Command(BaseCommand):
    help = "Run a program in the sandbox and print the result as one JSON object."
    requires_system_checks: ClassVar[list[str]] = []  # type: ignore[misc]
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--language", "-l", required=True, help="python, node, ruby, php or go (or an alias)")
        parser.add_argument("--limits", default=None, help="JSON object of limits, e.g. '{\"timeout_ms\": 2000}'")
        parser.add_argument("--stdin", dest="stdin_file", default=None, help="file whose bytes are the program's stdin")
        parser.add_argument("--artifacts-dir", default=None, help="copy files written to /work/outputs here")
        parser.add_argument("file", help="source file of the program, or - to read it from standard input")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            lang = get_language(options["language"])
        except InvalidSpec as exc:
            raise CommandError(exc.message) from exc
        limits_json: dict[str, Any] = {}
        if options["limits"]:
            try:
                limits_json = json.loads(options["limits"])
            except ValueError as exc:
                raise CommandError(f"--limits is not valid JSON: {exc}") from exc
            if not isinstance(limits_json, dict):
                raise CommandError("--limits must be a JSON object")
        try:
            limits = resolve_limits(limits_json, settings.LIMITS_DEFAULT, settings.LIMITS_MAX)
        except InvalidSpec as exc:
            raise CommandError(f"--limits: {exc.message} ({exc.param})") from exc

        code = self._read_text(options["file"], "program")
        stdin = b""
        if options["stdin_file"]:
            if options["stdin_file"] == "-" and options["file"] == "-":
                raise CommandError("the program and --stdin cannot both be read from standard input")
            stdin = self._read_bytes(options["stdin_file"], "--stdin")
        artifacts_dir: Path | None = None
        if options["artifacts_dir"]:
            artifacts_dir = Path(options["artifacts_dir"])
            try:
                artifacts_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CommandError(f"--artifacts-dir: {exc}") from exc
            if any(artifacts_dir.iterdir()):
                raise CommandError(f"--artifacts-dir {artifacts_dir} is not empty; artifacts are never overwritten")

        spec = RunSpec(language=lang.name, code=code, stdin=stdin, limits=limits)
        backend = get_sandbox()
        try:
            result = backend.run(spec, artifacts_dir=artifacts_dir)
            version = backend.version(lang.name)
        except InvalidSpec as exc:
            raise CommandError(f"{exc.message} ({exc.param})") from exc
        except SandboxUnavailable as exc:
            raise CommandError(f"the {settings.SANDBOX_BACKEND} sandbox is unavailable: {exc}") from exc
        finally:
            # The run's teardown (its cgroups, its tmpfs) is deferred to a thread that dies with this
            # process: finish it before exiting.
            backend.close()
        out = result.as_dict()
        out["artifacts"] = [{"path": a.path, "bytes": a.bytes} for a in result.artifacts]
        out["runtime_version"] = version
        document = {"object": "run", "language": lang.name, "backend": backend.name, **out, "limits": limits.as_dict()}
        self.stdout.write(json.dumps(document, ensure_ascii=False))

    def _read_bytes(self, name: str, what: str) -> bytes:
        if name == "-":
            return sys.stdin.buffer.read()
        try:
            return Path(name).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {what} file {name}: {exc.strerror}") from exc

    def _read_text(self, name: str, what: str) -> str:
        data = self._read_bytes(name, what)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(f"the {what} must be UTF-8 text: {exc}") from exc
