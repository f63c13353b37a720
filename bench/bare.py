"""The physical limit: hello world straight on the host, with the environment the sandbox gives a program.

Commands and variables come from the sandbox's own language table (sandbox/languages.py) and base
environment, so bare and sandboxed runs start the same interpreter the same way; paths the sandbox
puts under its private /tmp (HOME, TMPDIR, caches) point into a directory of the bench's instead.
Nothing of the host's environment is passed on (no NODE_EXTRA_CA_CERTS, no PYTHONPATH, ...).
Its files live in a tmpfs (/dev/shm), as the sandbox's /work and /tmp do: a Go build writes its cache.
Go builds every time in a fresh directory (`go build`, then the binary), as the sandbox does with its
build cache off; `go-binary` runs an already built binary, the limit for a program the cache serves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sandbox.backends.steps import BASE_ENV
from sandbox.languages import BUILD_DIR, LANGUAGES, RUBY_PRELUDE

from .common import EXPECTED_STDOUT, HELLO, Action, BenchError

GO_BINARY = "go-binary"
SANDBOX_TMP = "/tmp"
PRELUDE_SOURCE = Path(__file__).resolve().parent.parent / "sandbox" / "ruby_prelude.rb"
TMPFS = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"


class Bare:
    """Runs hello world per language on the host, in directories under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._binary_dir: Path | None = None
        # Every bare sample of the run, per language, whichever measure it was taken alongside.
        self.samples: dict[str, list[float]] = {}

    def keep(self, lang: str, times_ms: list[float]) -> None:
        self.samples.setdefault(lang, []).extend(times_ms)

    def action(self, lang: str) -> Action:
        """One run of `lang` (or `go-binary`) as a callable, for timing."""
        if lang == GO_BINARY:
            return self._run_binary
        return lambda: self.run(lang)

    def run(self, lang: str) -> None:
        language = LANGUAGES[lang]
        if not language.compiled:
            self._program(lang, self._reused_dir(lang))
            return
        # A fresh directory each time: nothing of an earlier build (GOCACHE lives in it) is reused.
        workdir = _populate(Path(tempfile.mkdtemp(prefix=f"{lang}-", dir=self.root)), lang)
        try:
            self._compile(lang, workdir)
            self._program(lang, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run_binary(self) -> None:
        if self._binary_dir is None:
            self._binary_dir = self._reused_dir(GO_BINARY)
            self._compile("go", self._binary_dir)
        self._program("go", self._binary_dir)

    def _compile(self, lang: str, workdir: Path) -> None:
        argv = LANGUAGES[lang].compile
        assert argv is not None
        _exec(self._at(argv, workdir), workdir, self._env(lang, workdir, compiling=True), expected_stdout="")

    def _program(self, lang: str, workdir: Path) -> None:
        argv = self._at(LANGUAGES[lang].run, workdir)
        _exec(argv, workdir, self._env(lang, workdir, compiling=False), expected_stdout=EXPECTED_STDOUT)

    def _reused_dir(self, name: str) -> Path:
        """A directory per language (or go-binary) holding its entry file, made on first use."""
        workdir = self.root / name
        if not workdir.exists():
            workdir.mkdir()
            _populate(workdir, "go" if name == GO_BINARY else name)
        return workdir

    @staticmethod
    def _env(lang: str, workdir: Path, *, compiling: bool) -> dict[str, str]:
        language = LANGUAGES[lang]
        env = {**BASE_ENV, **language.env, **(language.compile_env if compiling else {})}
        return {key: _under(value, SANDBOX_TMP, workdir / "tmp") for key, value in env.items()}

    @staticmethod
    def _at(argv: Sequence[str], workdir: Path) -> list[str]:
        """The language table's argv with the sandbox's /build moved into `workdir`, and the Ruby prelude
        (a synthetic /etc file in the sandbox) read from the repository."""
        return [_under(arg, BUILD_DIR, workdir / "build").replace(RUBY_PRELUDE, str(PRELUDE_SOURCE)) for arg in argv]


def _exec(argv: Sequence[str], workdir: Path, env: dict[str, str], expected_stdout: str) -> None:
    done = subprocess.run(list(argv), cwd=workdir, env=env, capture_output=True, check=False)
    if done.returncode != 0 or done.stdout.decode() != expected_stdout:
        raise BenchError(f"bare {' '.join(argv)} failed ({done.returncode}): {done.stdout!r} {done.stderr[-500:]!r}")


def _populate(workdir: Path, lang: str) -> Path:
    """The entry file, and the dirs that stand in for the sandbox's /tmp and /build."""
    (workdir / LANGUAGES[lang].entry_file).write_text(HELLO[lang])
    (workdir / "tmp").mkdir()
    (workdir / "build").mkdir()
    return workdir


def _under(value: str, prefix: str, replacement: Path) -> str:
    """`value` with a leading path `prefix` replaced (only whole path components)."""
    if value == prefix or value.startswith(prefix + "/"):
        return str(replacement) + value[len(prefix) :]
    return value
