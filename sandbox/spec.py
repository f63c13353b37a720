"""What to run: the backend-independent run spec, validated before any process starts."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO

from .errors import InvalidSpec
from .languages import Language, get_language
from .limits import DEFAULT_LIMITS, Limits
from .workspace import normalize_relpath

ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Variables that change how an interpreter, the loader or the shell behave: a run may not set them.
ENV_DENIED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PWD",
        "TMPDIR",
        "IFS",
        "ENV",
        "BASH_ENV",
        "LANG",
        "LANGUAGE",
        "MPLBACKEND",
        "MPLCONFIGDIR",
        "PERL5LIB",
        "PERL5OPT",
        "PHPRC",
        "PHP_INI_SCAN_DIR",
        "CGO_ENABLED",
        "TZDIR",
    }
)
ENV_DENIED_PREFIXES = (
    "LD_",
    "PYTHON",
    "NODE_",
    "NPM_",
    "RUBY",
    "GEM_",
    "BUNDLE_",
    "GO",
    "LC_",
    "CODEEXEC_",
    "DYLD_",
    "MALLOC_",
    "GLIBC_",
    "OPENBLAS_",
    "OMP_",
    "MKL_",
)
MAX_ENV_VARS = 64
MAX_ENV_VALUE_BYTES = 4096
MAX_ARGS = 64
MAX_ARG_BYTES = 4096
MAX_SOURCES = 32
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """An extra source file written next to the entry file."""

    path: str
    content: str


@dataclasses.dataclass(frozen=True)
class InputFile:
    """A file staged read-only at /work/inputs/<path>; `open` yields its bytes (storage, disk or memory)."""

    path: str
    size: int
    open: Callable[[], BinaryIO]

    @classmethod
    def from_bytes(cls, path: str, data: bytes) -> InputFile:
        import io

        return cls(path=path, size=len(data), open=lambda: io.BytesIO(data))


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: language, code and everything around it, with effective limits."""

    language: str
    code: str
    sources: Sequence[SourceFile] = ()
    stdin: str | bytes = b""
    args: Sequence[str] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    files: Sequence[InputFile] = ()
    limits: Limits = DEFAULT_LIMITS
    run_id: str = dataclasses.field(default_factory=lambda: "run_" + secrets.token_hex(12))

    @property
    def lang(self) -> Language:
        return get_language(self.language)

    @property
    def stdin_bytes(self) -> bytes:
        return self.stdin.encode() if isinstance(self.stdin, str) else self.stdin

    def validate(self) -> None:
        """Raise InvalidSpec (with the offending `param`) for anything a backend must not try to run."""
        lang = get_language(self.language)
        if not RUN_ID_RE.match(self.run_id):
            raise InvalidSpec("run_id must be 1-64 letters, digits, '_' or '-'.", param="run_id")
        validate_env(self.env)
        validate_args(self.args)
        seen: set[str] = {lang.entry_file}
        if len(self.sources) > MAX_SOURCES:
            raise InvalidSpec(f"At most {MAX_SOURCES} extra source files.", param="sources")
        for i, src in enumerate(self.sources):
            path = normalize_relpath(src.path, param=f"sources[{i}].path")
            top = path.split("/", 1)[0]
            if top in ("inputs", "outputs"):
                raise InvalidSpec(f"Source paths may not be under '{top}/'.", param=f"sources[{i}].path")
            if path.casefold() in {p.casefold() for p in seen}:
                raise InvalidSpec(f"Duplicate source path '{path}'.", param=f"sources[{i}].path")
            seen.add(path)
        inputs_seen: set[str] = set()
        for i, f in enumerate(self.files):
            path = normalize_relpath(f.path, param=f"files[{i}].path")
            if path.casefold() in inputs_seen:
                raise InvalidSpec(f"Duplicate input path '{path}'.", param=f"files[{i}].path")
            inputs_seen.add(path.casefold())
        _check_no_file_dir_clash(sorted(inputs_seen), "files")


def _check_no_file_dir_clash(paths: list[str], param: str) -> None:
    """Reject 'a' together with 'a/b': one name cannot be a file and a directory."""
    as_set = set(paths)
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in as_set:
                raise InvalidSpec(f"Input path '{path}' is below another input file.", param=param)


def validate_env(env: Mapping[str, str]) -> None:
    if len(env) > MAX_ENV_VARS:
        raise InvalidSpec(f"At most {MAX_ENV_VARS} environment variables.", param="env")
    for name, value in env.items():
        param = f"env.{name}" if isinstance(name, str) and len(name) <= 64 else "env"
        if not isinstance(name, str) or not ENV_NAME_RE.match(name):
            raise InvalidSpec("Environment variable names must match ^[A-Z_][A-Z0-9_]*$.", param=param)
        if name in ENV_DENIED_NAMES or name.startswith(ENV_DENIED_PREFIXES):
            raise InvalidSpec(f"Environment variable '{name}' may not be set by a run.", param=param)
        if not isinstance(value, str):
            raise InvalidSpec("Environment variable values must be strings.", param=param)
        if "\0" in value or len(value.encode()) > MAX_ENV_VALUE_BYTES:
            raise InvalidSpec(f"Environment values must be at most {MAX_ENV_VALUE_BYTES} bytes, no NUL.", param=param)


def validate_args(args: Sequence[str]) -> None:
    if len(args) > MAX_ARGS:
        raise InvalidSpec(f"At most {MAX_ARGS} arguments.", param="args")
    for arg in args:
        if not isinstance(arg, str) or "\0" in arg or len(arg.encode()) > MAX_ARG_BYTES:
            raise InvalidSpec(f"Arguments must be strings of at most {MAX_ARG_BYTES} bytes, no NUL.", param="args")
