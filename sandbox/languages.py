"""The language table: the one place that says how each language is written, built, run and probed.

Commands name absolute paths of the distribution's interpreters (Debian packages under /usr),
never a virtualenv's. `{args}` is not templated: a run's argv is appended to `run` as a list.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from .errors import InvalidSpec

# Where the sandbox shows sandbox/ruby_prelude.rb (a synthetic /etc file, as passwd is).
RUBY_PRELUDE = "/etc/codeexec-ruby-prelude.rb"


@dataclasses.dataclass(frozen=True)
class Language:
    name: str
    aliases: tuple[str, ...]
    entry_file: str
    run: tuple[str, ...]
    version_probe: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    compile_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    packages: tuple[str, ...] = ()
    # /etc entries the interpreter reads (bound read-only when they exist on the host).
    etc: tuple[str, ...] = ()
    version_prefix: str = ""
    # A warm sandbox may start the interpreter before its run (backends/pool.py): it waits on `entry_file`
    # as a pipe, which the run fills with the program. Programs it would read differently from a pipe
    # (a pattern) or whose files it reads before the program (`startup_files`, in /work) are not given one.
    pipe_reads_differently: str = ""
    startup_files: tuple[str, ...] = ()

    @property
    def compiled(self) -> bool:
        return self.compile is not None

    def reads_like_a_file(self, code: str, source_paths: Sequence[str]) -> bool:
        """Whether an interpreter started before this program exists runs it as it would from a file."""
        if self.pipe_reads_differently and re.search(self.pipe_reads_differently, code, re.MULTILINE):
            return False
        return not set(self.startup_files) & set(source_paths)

    def parse_version(self, output: str) -> str:
        text = output.strip().splitlines()[0].strip() if output.strip() else ""
        return text.removeprefix(self.version_prefix)


# Where build products live inside the sandbox: written during compile, read-only during run.
BUILD_DIR = "/build"
# matplotlib's config dir: writable (it insists), with the prebuilt font list bound read-only inside.
MPLCONFIGDIR = "/tmp/.matplotlib"

LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in [
        Language(
            name="python",
            aliases=("py", "python3"),
            entry_file="main.py",
            run=("/usr/bin/python3", "main.py"),
            version_probe=("/usr/bin/python3", "-c", "import platform; print(platform.python_version())"),
            env={
                "MPLBACKEND": "Agg",
                "MPLCONFIGDIR": MPLCONFIGDIR,
                "PYTHONDONTWRITEBYTECODE": "1",
                # Output leaves as it is written: it streams live, keeps its order between stdout and
                # stderr, and survives a kill (timeout, memory) instead of dying in a buffer.
                "PYTHONUNBUFFERED": "1",
                "PYTHONIOENCODING": "utf-8",
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
            },
            packages=("numpy", "pandas", "matplotlib"),
            etc=("matplotlibrc",),
            # An encoding declaration (PEP 263) makes CPython seek back in the file: no pipe then.
            pipe_reads_differently=r"\A(?:[^\n]*\n)?[^\n]*coding[:=]",
        ),
        Language(
            name="node",
            aliases=("js", "javascript", "nodejs"),
            entry_file="main.js",
            run=("/usr/bin/node", "main.js"),
            version_probe=("/usr/bin/node", "--version"),
            version_prefix="v",
            startup_files=("package.json",),  # its "type" decides CommonJS or ES module before main.js is read
        ),
        Language(
            name="ruby",
            aliases=("rb",),
            entry_file="main.rb",
            # RubyGems loads on demand: the prelude keeps every bundled gem requirable (ruby_prelude.rb).
            run=("/usr/bin/ruby", "--disable-gems", f"-r{RUBY_PRELUDE}", "main.rb"),
            version_probe=("/usr/bin/ruby", "-e", "print RUBY_VERSION"),
            pipe_reads_differently=r"^__END__\r?$",  # DATA is the script file itself, which can seek
        ),
        Language(
            name="php",
            aliases=(),
            entry_file="main.php",
            run=("/usr/bin/php", "main.php"),
            version_probe=("/usr/bin/php", "-r", "echo PHP_VERSION;"),
            etc=("php",),
        ),
        Language(
            name="go",
            aliases=("golang",),
            entry_file="main.go",
            # GOPATH mode builds every .go file in /work as package main; the standard library comes
            # precompiled from the distribution (GOROOT/pkg), read-only, so hello world builds only itself.
            compile=("/usr/bin/go", "build", "-o", f"{BUILD_DIR}/main", "."),
            run=(f"{BUILD_DIR}/main",),
            version_probe=("/usr/bin/go", "env", "GOVERSION"),
            version_prefix="go",
            compile_env={
                "GO111MODULE": "off",
                "GOCACHE": "/tmp/.gocache",
                "GOPATH": "/tmp/.gopath",
                "GOTOOLCHAIN": "local",
                "GOFLAGS": "",
                "GOPROXY": "off",
                "GOTELEMETRY": "off",
            },
        ),
    ]
}

_BY_ALIAS: dict[str, Language] = {}
for _lang in LANGUAGES.values():
    _BY_ALIAS[_lang.name] = _lang
    for _alias in _lang.aliases:
        _BY_ALIAS[_alias] = _lang


def get_language(name: str) -> Language:
    """Look a language up by name or alias; unknown names are the client's error."""
    lang = _BY_ALIAS.get(name.lower()) if isinstance(name, str) else None
    if lang is None:
        known = ", ".join(LANGUAGES)
        raise InvalidSpec(f"Unsupported language '{name}'. Supported: {known}.", param="language")
    return lang


def all_languages() -> Sequence[Language]:
    return list(LANGUAGES.values())
