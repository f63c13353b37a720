"""Fast unit tests of the sandbox package that start no sandbox: limits, spec validation, paths,
result classification, bubblewrap's argv and the seccomp policy."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sandbox import DEFAULT_LIMITS, MAX_LIMITS, InvalidSpec, Limits, RunSpec, resolve_limits
from sandbox.backends.bwrap import BASE_ENV, build_bwrap_argv
from sandbox.languages import get_language
from sandbox.outcome import StepUsage, classify
from sandbox.result import ErrorCode, Status
from sandbox.seccomp import compile_profile
from sandbox.spec import InputFile, SourceFile
from sandbox.supervise import StepOutcome
from sandbox.workspace import Workspace, normalize_relpath

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROFILE_PATH = PROJECT_DIR / "seccomp" / "profile.json"

# ---- limits ---------------------------------------------------------------------------------------


def test_it_resolves_no_limits_to_the_defaults() -> None:
    assert resolve_limits(None) == DEFAULT_LIMITS
    assert resolve_limits({}) == DEFAULT_LIMITS


def test_it_uses_the_documented_defaults_and_maximums() -> None:
    assert (
        DEFAULT_LIMITS.timeout_ms,
        DEFAULT_LIMITS.cpu_ms,
        DEFAULT_LIMITS.memory_mb,
        DEFAULT_LIMITS.pids,
        DEFAULT_LIMITS.disk_mb,
        DEFAULT_LIMITS.max_output_bytes,
        DEFAULT_LIMITS.max_artifacts,
    ) == (10_000, 10_000, 256, 64, 64, 65_536, 16)
    assert (
        MAX_LIMITS.timeout_ms,
        MAX_LIMITS.memory_mb,
        MAX_LIMITS.pids,
        MAX_LIMITS.disk_mb,
        MAX_LIMITS.max_output_bytes,
        MAX_LIMITS.max_artifacts,
    ) == (60_000, 2048, 256, 1024, 1_048_576, 100)


def test_it_lets_cpu_ms_follow_timeout_ms_when_only_timeout_is_given() -> None:
    limits = resolve_limits({"timeout_ms": 3000})
    assert limits.timeout_ms == 3000
    assert limits.cpu_ms == 3000


def test_it_keeps_an_explicit_cpu_ms() -> None:
    limits = resolve_limits({"timeout_ms": 3000, "cpu_ms": 1500})
    assert (limits.timeout_ms, limits.cpu_ms) == (3000, 1500)
    assert resolve_limits({"cpu_ms": 700}).timeout_ms == DEFAULT_LIMITS.timeout_ms


def test_it_overrides_only_the_given_limits() -> None:
    limits = resolve_limits({"memory_mb": 128, "pids": 16, "max_output_bytes": 100})
    assert (limits.memory_mb, limits.pids, limits.max_output_bytes) == (128, 16, 100)
    assert limits.disk_mb == DEFAULT_LIMITS.disk_mb
    assert limits.timeout_ms == DEFAULT_LIMITS.timeout_ms


def test_it_ignores_none_values() -> None:
    assert resolve_limits({"memory_mb": None}) == DEFAULT_LIMITS


def test_it_accepts_values_equal_to_the_maximum() -> None:
    assert resolve_limits(MAX_LIMITS.as_dict()) == MAX_LIMITS


@pytest.mark.parametrize("name", Limits.field_names())
def test_it_rejects_a_value_above_the_maximum_naming_the_param(name: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        resolve_limits({name: getattr(MAX_LIMITS, name) + 1})
    assert info.value.param == f"limits.{name}"


def test_it_rejects_memory_above_the_maximum_as_limits_memory_mb() -> None:
    with pytest.raises(InvalidSpec) as info:
        resolve_limits({"memory_mb": 4096})
    assert info.value.param == "limits.memory_mb"


def test_it_respects_operator_maximums() -> None:
    maximums = dataclasses.replace(MAX_LIMITS, memory_mb=512)
    with pytest.raises(InvalidSpec) as info:
        resolve_limits({"memory_mb": 1024}, maximums=maximums)
    assert info.value.param == "limits.memory_mb"
    # Defaults above an operator's maximum are clipped to it.
    clipped = resolve_limits({}, defaults=dataclasses.replace(DEFAULT_LIMITS, memory_mb=1024), maximums=maximums)
    assert clipped.memory_mb == 512


@pytest.mark.parametrize(
    ("name", "value"), [("memory_mb", 1), ("pids", 0), ("timeout_ms", 0), ("cpu_ms", -5), ("max_artifacts", -1)]
)
def test_it_rejects_a_value_below_the_minimum(name: str, value: int) -> None:
    with pytest.raises(InvalidSpec) as info:
        resolve_limits({name: value})
    assert info.value.param == f"limits.{name}"


@pytest.mark.parametrize("name", ["network", "memory", "timeout", "MEMORY_MB", ""])
def test_it_rejects_unknown_limit_names(name: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        resolve_limits({name: 1})
    assert info.value.param == f"limits.{name}"


@pytest.mark.parametrize("value", [True, False, "128", "lots", 128.0, 1.5, [128], {"v": 1}])
def test_it_rejects_non_integer_limit_values(value: Any) -> None:
    with pytest.raises(InvalidSpec) as info:
        resolve_limits({"memory_mb": value})
    assert info.value.param == "limits.memory_mb"


def test_it_uses_the_param_prefix() -> None:
    with pytest.raises(InvalidSpec) as info:
        resolve_limits({"pids": 100_000}, param_prefix="x")
    assert info.value.param == "x.pids"


# ---- run spec ----------------------------------------------------------------------------------------


def _spec(**kwargs: Any) -> RunSpec:
    return RunSpec(**{"language": "python", "code": "print(1)", **kwargs})


def _param_of(spec: RunSpec) -> str | None:
    with pytest.raises(InvalidSpec) as info:
        spec.validate()
    return info.value.param


def test_it_accepts_a_plain_spec() -> None:
    _spec().validate()


@pytest.mark.parametrize("language", ["cobol", "", "python2", "pythonx", "go ", "rust"])
def test_it_rejects_an_unknown_language(language: str) -> None:
    assert _param_of(_spec(language=language)) == "language"


@pytest.mark.parametrize(
    ("alias", "name"),
    [("py", "python"), ("python3", "python"), ("js", "node"), ("golang", "go"), ("PY", "python"), ("Node", "node")],
)
def test_it_accepts_language_aliases(alias: str, name: str) -> None:
    spec = _spec(language=alias)
    spec.validate()
    assert spec.lang.name == name
    assert get_language(alias).name == name


@pytest.mark.parametrize("name", ["MY_VAR", "_X", "FOO1", "A", "API_KEY_2"])
def test_it_accepts_well_formed_env_names(name: str) -> None:
    _spec(env={name: "value"}).validate()


@pytest.mark.parametrize("name", ["lower", "1ABC", "A-B", "A B", "", "Ä", "A=B", "A.B", "mixedCase"])
def test_it_rejects_env_names_outside_the_pattern(name: str) -> None:
    assert _param_of(_spec(env={name: "v"})) == f"env.{name}"


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "NODE_OPTIONS",
        "PATH",
        "HOME",
        "GOFLAGS",
        "GOROOT",
        "RUBYOPT",
        "MPLCONFIGDIR",
        "PHPRC",
        "BASH_ENV",
        "CODEEXEC_SECRET",
    ],
)
def test_it_rejects_denied_env_names(name: str) -> None:
    assert _param_of(_spec(env={name: "x"})) == f"env.{name}"


@pytest.mark.parametrize("value", ["a\0b", "x" * 5000, 5, None])
def test_it_rejects_bad_env_values(value: Any) -> None:
    assert _param_of(_spec(env={"GOOD_NAME": value})) == "env.GOOD_NAME"


def test_it_rejects_too_many_env_vars() -> None:
    assert _param_of(_spec(env={f"V{i}": "x" for i in range(65)})) == "env"


@pytest.mark.parametrize("args", [("a\0b",), ("x" * 5000,), tuple("a" for _ in range(65)), (1,)])
def test_it_rejects_bad_args(args: tuple[Any, ...]) -> None:
    assert _param_of(_spec(args=args)) == "args"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../x.py",
        "a/../b.py",
        "a//b.py",
        "",
        "a\\b.py",
        "./x.py",
        "a/./b.py",
        "x/",
        "..",
        ".",
        "a\nb.py",
        "inputs/x.py",
        "outputs/x.py",
        "inputs",
        "e\u0301.py",
    ],
)
def test_it_rejects_bad_source_paths(path: str) -> None:
    assert _param_of(_spec(sources=(SourceFile(path, "x"),))) == "sources[0].path"


@pytest.mark.parametrize("path", ["util.py", "lib/helpers.py", "a/b/c/d.txt", "données.csv", "inputsx.py"])
def test_it_accepts_good_source_paths(path: str) -> None:
    _spec(sources=(SourceFile(path, "x"),)).validate()


@pytest.mark.parametrize(
    ("first", "second"), [("util.py", "util.py"), ("util.py", "UTIL.py"), ("lib/A.py", "LIB/a.py")]
)
def test_it_rejects_duplicate_source_paths_case_insensitively(first: str, second: str) -> None:
    assert _param_of(_spec(sources=(SourceFile(first, "a"), SourceFile(second, "b")))) == "sources[1].path"


@pytest.mark.parametrize("path", ["main.py", "Main.py", "MAIN.PY"])
def test_it_rejects_a_source_that_would_replace_the_entry_file(path: str) -> None:
    assert _param_of(_spec(sources=(SourceFile(path, "x"),))) == "sources[0].path"


def test_it_rejects_too_many_sources() -> None:
    sources = tuple(SourceFile(f"m{i}.py", "") for i in range(33))
    assert _param_of(_spec(sources=sources)) == "sources"


def _input(path: str) -> InputFile:
    return InputFile.from_bytes(path, b"data")


@pytest.mark.parametrize("path", ["/abs.csv", "../x.csv", "a//b", "", "a\\b"])
def test_it_rejects_bad_input_paths(path: str) -> None:
    assert _param_of(_spec(files=(_input(path),))) == "files[0].path"


@pytest.mark.parametrize(("first", "second"), [("data/in.csv", "data/in.csv"), ("data/in.csv", "DATA/IN.csv")])
def test_it_rejects_duplicate_input_paths(first: str, second: str) -> None:
    assert _param_of(_spec(files=(_input(first), _input(second)))) == "files[1].path"


@pytest.mark.parametrize(("first", "second"), [("data", "data/in.csv"), ("data/in.csv", "data"), ("a/b", "a/b/c/d")])
def test_it_rejects_an_input_that_is_both_file_and_directory(first: str, second: str) -> None:
    assert _param_of(_spec(files=(_input(first), _input(second)))) == "files"


def test_it_accepts_inputs_sharing_a_directory() -> None:
    _spec(files=(_input("data/a.csv"), _input("data/b.csv"), _input("other.txt"))).validate()


@pytest.mark.parametrize("run_id", ["", "has space", "a/b", "x" * 65, "../x"])
def test_it_rejects_bad_run_ids(run_id: str) -> None:
    assert _param_of(_spec(run_id=run_id)) == "run_id"


def test_it_gives_each_spec_a_fresh_run_id() -> None:
    assert _spec().run_id != _spec().run_id
    assert _spec().run_id.startswith("run_")


# ---- paths ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["a", "a/b", "a.b/c-d_e.txt", "données/été.csv", "x" * 255, "/".join("a" * 16)])
def test_it_keeps_clean_relative_paths(path: str) -> None:
    assert normalize_relpath(path, param="p") == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/a",
        "a/",
        "/",
        "a//b",
        "a/./b",
        "a/../b",
        "..",
        ".",
        "a\\b",
        "C:\\x",
        "a\x00b",
        "a\tb",
        "a\u200bb",
        "a\u2028b",
        "x" * 256,
        "/".join("a" * 17),
        "a/" * 600 + "b",
        "e\u0301",
    ],
)
def test_it_rejects_unclean_relative_paths(path: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        normalize_relpath(path, param="files[3].path")
    assert info.value.param == "files[3].path"


@pytest.mark.parametrize("value", [None, 5, b"a", ["a"]])
def test_it_rejects_non_string_paths(value: Any) -> None:
    with pytest.raises(InvalidSpec):
        normalize_relpath(value, param="p")


# ---- classify -------------------------------------------------------------------------------------------


def _outcome(
    returncode: int | None,
    killed_for: str | None = None,
    stdout: bytes = b"",
    stderr: bytes = b"",
    stdout_truncated: bool = False,
    stderr_truncated: bool = False,
) -> StepOutcome:
    return StepOutcome(
        returncode=returncode,
        killed_for=killed_for,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=stdout_truncated,
        stderr_truncated=stderr_truncated,
        wall_ms=42,
    )


def _usage(oom_kills: int = 0) -> StepUsage:
    return StepUsage(cpu_ms=17, memory_peak_bytes=1 << 20, oom_kills=oom_kills)


def test_it_classifies_exit_0_as_succeeded() -> None:
    result = classify(_outcome(0, stdout=b"hi\n"), _usage(), phase="run")
    assert result.status == Status.SUCCEEDED
    assert (result.exit_code, result.signal, result.error) == (0, None, None)
    assert result.stdout == "hi\n"
    assert (result.usage.wall_ms, result.usage.cpu_ms, result.usage.memory_peak_bytes) == (42, 17, 1 << 20)


def test_it_classifies_a_non_zero_exit_as_failed_without_error() -> None:
    result = classify(_outcome(3), _usage(), phase="run")
    assert result.status == Status.FAILED
    assert (result.exit_code, result.signal, result.error) == (3, None, None)


@pytest.mark.parametrize("code", [-9, 137, 0, 1])
def test_it_classifies_a_wall_kill_as_wall_timeout(code: int) -> None:
    result = classify(_outcome(code, killed_for="wall"), _usage(), phase="run")
    assert result.status == Status.TIMEOUT
    assert result.error is not None and result.error.code == ErrorCode.WALL_TIMEOUT
    assert "timeout_ms" in result.error.message


def test_it_names_compile_timeout_ms_for_a_compile_wall_kill() -> None:
    result = classify(_outcome(-9, killed_for="wall"), _usage(), phase="compile")
    assert result.status == Status.TIMEOUT
    assert result.error is not None and result.error.code == ErrorCode.WALL_TIMEOUT
    assert "compile_timeout_ms" in result.error.message


def test_it_classifies_a_cpu_kill_as_cpu_timeout() -> None:
    result = classify(_outcome(-9, killed_for="cpu"), _usage(), phase="run")
    assert result.status == Status.TIMEOUT
    assert result.error is not None and result.error.code == ErrorCode.CPU_TIMEOUT
    assert "cpu_ms" in result.error.message


def test_it_prefers_the_time_limit_over_an_oom_seen_while_killing() -> None:
    result = classify(_outcome(-9, killed_for="wall"), _usage(oom_kills=1), phase="run")
    assert result.error is not None and result.error.code == ErrorCode.WALL_TIMEOUT


@pytest.mark.parametrize("code", [137, -9, 1, 139])
def test_it_classifies_an_oom_kill_as_oom(code: int) -> None:
    result = classify(_outcome(code), _usage(oom_kills=1), phase="run")
    assert result.status == Status.OOM
    assert result.error is not None and result.error.code == ErrorCode.MEMORY_LIMIT
    assert "memory_mb" in result.error.message


def test_it_names_compile_memory_mb_for_an_oom_while_compiling() -> None:
    result = classify(_outcome(137), _usage(oom_kills=2), phase="compile")
    assert result.status == Status.OOM
    assert result.error is not None and "compile_memory_mb" in result.error.message


def test_it_does_not_call_a_successful_exit_oom() -> None:
    # A child was OOM-killed but the program handled it and exited 0.
    result = classify(_outcome(0), _usage(oom_kills=1), phase="run")
    assert result.status == Status.SUCCEEDED
    assert result.error is None


def test_it_classifies_exit_137_as_failed_with_sigkill() -> None:
    result = classify(_outcome(137), _usage(), phase="run")
    assert result.status == Status.FAILED
    assert result.signal == "SIGKILL"
    assert result.error is None


@pytest.mark.parametrize(("code", "name"), [(139, "SIGSEGV"), (134, "SIGABRT"), (143, "SIGTERM"), (136, "SIGFPE")])
def test_it_names_the_signal_of_128_plus_n(code: int, name: str) -> None:
    result = classify(_outcome(code), _usage(), phase="run")
    assert result.status == Status.FAILED
    assert result.signal == name
    assert result.error is None


def test_it_reports_a_negative_returncode_as_a_signal_without_exit_code() -> None:
    result = classify(_outcome(-9), _usage(), phase="run")
    assert result.status == Status.FAILED
    assert result.signal == "SIGKILL"
    assert result.exit_code is None


def test_it_classifies_a_cancel_as_cancelled() -> None:
    result = classify(_outcome(-9, killed_for="cancel"), _usage(oom_kills=1), phase="run")
    assert result.status == Status.CANCELLED
    assert result.error is not None and result.error.code == ErrorCode.CANCELLED


def test_it_classifies_a_bwrap_start_failure_as_sandbox_error() -> None:
    result = classify(
        _outcome(1, stderr=b"bwrap: Can't mount proc on /newroot/proc: Operation not permitted\n"),
        _usage(),
        phase="run",
    )
    assert result.status == Status.ERROR
    assert result.error is not None and result.error.code == ErrorCode.SANDBOX_ERROR


def test_it_does_not_blame_the_sandbox_for_a_program_that_prints_bwrap() -> None:
    result = classify(_outcome(1, stderr=b"Traceback ...\nbwrap: not really\n"), _usage(), phase="run")
    assert result.status == Status.FAILED
    assert result.error is None


def test_it_counts_raw_captured_bytes_as_output_bytes() -> None:
    result = classify(_outcome(0, stdout=b"\xff\xfe", stderr=b"\xe2\x82\xac"), _usage(), phase="run")
    assert result.stdout == "\ufffd\ufffd"
    assert result.stderr == "€"
    assert result.usage.output_bytes == 5


def test_it_drops_a_cut_multibyte_character_at_the_cap() -> None:
    result = classify(_outcome(0, stdout=b"ab\xe2\x82", stdout_truncated=True), _usage(), phase="run")
    assert result.stdout == "ab"
    assert result.stdout_truncated is True


def test_it_keeps_invalid_bytes_visible_when_not_truncated() -> None:
    result = classify(_outcome(0, stdout=b"ab\xe2\x82"), _usage(), phase="run")
    assert result.stdout.startswith("ab\ufffd")


# ---- bubblewrap argv ------------------------------------------------------------------------------------

BIND_FLAGS = {"--bind", "--ro-bind", "--dev-bind", "--bind-try", "--ro-bind-try", "--dev-bind-try"}


def _argv(
    tmp_path: Path,
    language: str = "python",
    env: dict[str, str] | None = None,
    build_writable: bool = False,
    mpl: bool = True,
) -> list[str]:
    ws = Workspace(root=tmp_path / "runs", run_dir=tmp_path / "runs" / "run_x", uid=61000, gid=61000)
    lang = get_language(language)
    fontlist = tmp_path / "static" / "matplotlib" / "fontlist-v390.json"
    return build_bwrap_argv(
        bwrap="/usr/bin/bwrap",
        ws=ws,
        etc_dir=tmp_path / "static" / f"etc-{language}-0123456789abcdef",
        lang=lang,
        argv=["/usr/bin/prlimit", "--", *lang.run, "arg1"],
        env=env if env is not None else {**lang.env, "USER_VAR": "v"},
        tmp_bytes=64 << 20,
        build_writable=build_writable,
        seccomp_fd=11,
        info_fd=12,
        block_fd=13,
        mpl_fontlist=fontlist if mpl else None,
    )


def _options(argv: list[str]) -> list[str]:
    """The bwrap options, without the command after '--'."""
    return argv[1 : argv.index("--")]


def _binds(argv: list[str]) -> list[tuple[str, str, str]]:
    opts = _options(argv)
    return [(opts[i], opts[i + 1], opts[i + 2]) for i in range(len(opts)) if opts[i] in BIND_FLAGS]


@pytest.mark.parametrize("language", ["python", "node", "ruby", "php", "go"])
def test_it_builds_bwrap_argv_with_every_hardening_flag(tmp_path: Path, language: str) -> None:
    argv = _argv(tmp_path, language=language, build_writable=language == "go")
    opts = _options(argv)
    for flag in (
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ):
        assert flag in opts, flag
    assert opts[opts.index("--cap-drop") + 1] == "ALL"
    assert opts[opts.index("--seccomp") + 1] == "11"
    assert opts[opts.index("--remount-ro") + 1] == "/"
    assert opts[opts.index("--chdir") + 1] == "/work"
    assert opts[opts.index("--uid") + 1] != "0"
    assert opts[opts.index("--gid") + 1] != "0"
    for forbidden in ("--share-net", "--cap-add", "--as-pid-1", "--unshare-user-try", "--userns", "--userns2"):
        assert forbidden not in opts, forbidden
    # The program comes last, after '--', untouched.
    assert argv[argv.index("--") + 1 :] == ["/usr/bin/prlimit", "--", *get_language(language).run, "arg1"]


def test_it_clears_the_environment_before_setting_any_variable(tmp_path: Path) -> None:
    opts = _options(_argv(tmp_path))
    setenv_positions = [i for i, o in enumerate(opts) if o == "--setenv"]
    assert setenv_positions
    assert opts.index("--clearenv") < min(setenv_positions)
    env = {opts[i + 1]: opts[i + 2] for i in setenv_positions}
    assert env["USER_VAR"] == "v"
    assert env["PATH"] == BASE_ENV["PATH"]
    assert env["HOME"] == "/tmp"
    assert set(env) == set(BASE_ENV) | set(get_language("python").env) | {"USER_VAR"}


def test_it_never_passes_the_host_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/codeexec")
    monkeypatch.setenv("SIGNING_KEY", "top-secret-signing-key")
    argv = _argv(tmp_path)
    joined = "\0".join(argv)
    assert "DATABASE_URL" not in joined and "postgres://secret" not in joined
    assert "SIGNING_KEY" not in joined and "top-secret-signing-key" not in joined
    assert "--unsetenv" not in argv  # nothing to unset: the environment is built from scratch


def _is_same_or_below(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@pytest.mark.parametrize("language", ["python", "node", "ruby", "php", "go"])
def test_it_never_binds_home_root_var_or_the_project(tmp_path: Path, language: str) -> None:
    binds = _binds(_argv(tmp_path, language=language))
    assert binds
    forbidden = ["/home", "/root", "/var", str(PROJECT_DIR)]
    for flag, src, dest in binds:
        assert src != "/", (flag, src, dest)
        for bad in forbidden:
            # Neither the directory itself, anything inside it, nor a parent that would contain it.
            assert not _is_same_or_below(src, bad), (flag, src, dest)
            assert not _is_same_or_below(bad, src), (flag, src, dest)
            assert not _is_same_or_below(dest, bad), (flag, src, dest)
    assert "--dev-bind" not in {b[0] for b in binds}


def test_it_binds_the_system_read_only_and_only_the_run_dir_writable(tmp_path: Path) -> None:
    binds = _binds(_argv(tmp_path, language="go", build_writable=True))
    writable = {(src, dest) for flag, src, dest in binds if flag in ("--bind", "--bind-try", "--dev-bind")}
    run_fs = tmp_path / "runs" / "run_x" / "fs"
    # /build is a tmpfs of its own beside the run's fs, so build products never use disk_mb of /work.
    build = tmp_path / "runs" / "run_x" / "build"
    assert writable == {(str(run_fs / "work"), "/work"), (str(build), "/build")}
    assert ("--ro-bind", "/usr", "/usr") in binds
    assert ("--ro-bind", str(run_fs / "inputs"), "/work/inputs") in binds


def test_it_binds_build_read_only_when_running(tmp_path: Path) -> None:
    binds = _binds(_argv(tmp_path, language="go", build_writable=False))
    build = tmp_path / "runs" / "run_x" / "build"
    assert ("--ro-bind", str(build), "/build") in binds
    assert all(dest != "/build" for flag, _, dest in binds if flag == "--bind")


def test_it_binds_the_prebuilt_font_list_read_only_for_python(tmp_path: Path) -> None:
    binds = _binds(_argv(tmp_path))
    fontlist = str(tmp_path / "static" / "matplotlib" / "fontlist-v390.json")
    assert ("--ro-bind", fontlist, "/tmp/.matplotlib/fontlist-v390.json") in binds


def test_it_binds_no_etc_file_beyond_the_allowed_few(tmp_path: Path) -> None:
    binds = _binds(_argv(tmp_path))
    etc = [(src, dest) for _, src, dest in binds if _is_same_or_below(dest, "/etc")]
    # One bind of the prepared tree (build_etc_tree), never the host's /etc or a file of it.
    assert etc == [(str(tmp_path / "static" / "etc-python-0123456789abcdef"), "/etc")], etc


@pytest.mark.parametrize("language", ["python", "php", "node"])
def test_the_etc_tree_holds_the_synthetic_files_and_the_allowed_host_entries_only(
    tmp_path: Path, language: str
) -> None:
    from sandbox.backends.bwrap import COMMON_ETC, SYNTHETIC_ETC, build_etc_tree

    static = tmp_path / "static"
    (static / "etc").mkdir(parents=True)
    for name, content in SYNTHETIC_ETC.items():
        (static / "etc" / name).write_text(content)
    lang = get_language(language)
    umask = os.umask(0o077)  # a worker started with a strict umask still gives the sandbox a readable /etc
    try:
        tree = build_etc_tree(static, lang)
    finally:
        os.umask(umask)
    top = {p.name for p in tree.iterdir()}
    allowed = set(SYNTHETIC_ETC) | {name.split("/")[0] for name in (*COMMON_ETC, *lang.etc)}
    assert top <= allowed, top - allowed
    assert set(SYNTHETIC_ETC) <= top
    assert (tree / "passwd").read_text() == SYNTHETIC_ETC["passwd"]  # synthetic, not the host's
    for secret in ("shadow", "gshadow", "sudoers", "ssh", "environment", "machine-id"):
        assert not (tree / secret).exists(), secret
    for name in (*COMMON_ETC, *lang.etc):  # the host's entries that exist, with the host's content
        host = Path("/etc") / name
        if host.is_file():
            assert (tree / name).read_bytes() == host.read_bytes(), name
    assert all(oct(p.stat().st_mode)[-3:] == "755" for p in [tree, *[d for d in tree.rglob("*") if d.is_dir()]])
    # Made once: the same contents give the same tree, which is reused as it is.
    assert build_etc_tree(static, lang) == tree
    (static / "etc" / "hosts").write_text("127.0.0.1 localhost other\n")
    changed = build_etc_tree(static, lang)
    assert changed != tree and (changed / "hosts").read_text().endswith("other\n")
    assert (tree / "hosts").read_text() == SYNTHETIC_ETC["hosts"]  # the old tree, as mounted sandboxes see it


def _static_with_synthetic_etc(tmp_path: Path) -> Path:
    from sandbox.backends.bwrap import SYNTHETIC_ETC

    static = tmp_path / "static"
    (static / "etc").mkdir(parents=True)
    for name, content in SYNTHETIC_ETC.items():
        (static / "etc" / name).write_text(content)
    return static


def test_etc_trees_no_process_holds_are_removed_and_held_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    from sandbox.backends.bwrap import build_etc_tree, hold_etc_tree, remove_unused_etc_trees

    static = _static_with_synthetic_etc(tmp_path)
    lang = get_language("python")
    old = build_etc_tree(static, lang)  # made by a worker that has since stopped: nobody holds it
    (static / "etc" / "hosts").write_text("127.0.0.1 localhost changed\n")  # a host file changed since
    elsewhere = build_etc_tree(static, get_language("php"))
    current, hold = hold_etc_tree(static, lang)
    assert current != old
    # Another live worker process holds the php tree.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl, os, sys; fd = os.open({str(elsewhere)!r}, os.O_RDONLY); "
            "fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        (static / ".stale-etc-python-0000000000000000-12345678").mkdir()  # a removal a crash cut short
        assert remove_unused_etc_trees(static) == [old.name]
        assert not old.exists() and current.is_dir() and elsewhere.is_dir()
        assert sorted(p.name for p in static.iterdir()) == sorted(["etc", current.name, elsewhere.name])
    finally:
        holder.communicate("")
    assert remove_unused_etc_trees(static) == [elsewhere.name]  # its holder is gone
    os.close(hold)
    assert remove_unused_etc_trees(static) == [current.name]
    # Made again by the next process that needs it, under the same name.
    again, hold = hold_etc_tree(static, lang)
    os.close(hold)
    assert again == current and (again / "hosts").read_text().endswith("changed\n")


def test_a_worker_removes_the_etc_trees_no_worker_uses_when_it_starts() -> None:
    import shutil
    import tempfile

    from sandbox import SandboxConfig, get_backend

    top = Path(tempfile.mkdtemp(prefix="codeexec-etcgc-", dir="/tmp"))  # bwrap's uid must traverse it
    os.chmod(top, 0o711)
    root = top / "w"
    stale = root / ".static" / "etc-python-0123456789abcdef"
    (stale / "ssl").mkdir(parents=True)
    (stale / "hosts").write_text("old\n")
    backend: Any = get_backend("bwrap", SandboxConfig(workdir=root, cgroup_parent=f"cx-etcgc-{os.getpid()}"))
    try:
        backend.prepare()
        assert not stale.exists()
        trees = sorted(p.name for p in (root / ".static").glob("etc-*"))
        assert len(trees) == 5 and all(p.is_dir() for p in backend._etc_dirs.values()), trees
    finally:
        backend.close()
        backend.cleanup_orphans()
        backend.cgroups.remove_parent()
        shutil.rmtree(top, ignore_errors=True)


# ---- seccomp policy -------------------------------------------------------------------------------------

DENIED_SYSCALLS = [
    "mount",
    "umount2",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "chroot",
    "pivot_root",
    "clone3",
    "umount",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "name_to_handle_at",
    "pidfd_getfd",
    "swapon",
    "reboot",
    "settimeofday",
    "acct",
    "quotactl",
]
DENY_ACTIONS = {"SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS"}
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return json.loads(PROFILE_PATH.read_text())


def _allowing_rules(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"] if name in r["names"] and r["action"] not in DENY_ACTIONS]


def test_it_denies_by_default_with_an_errno(profile: dict[str, Any]) -> None:
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile.get("defaultErrnoRet", 1) != 0


@pytest.mark.parametrize("name", DENIED_SYSCALLS)
def test_it_never_allows_dangerous_syscalls(profile: dict[str, Any], name: str) -> None:
    assert _allowing_rules(profile, name) == []


def test_it_uses_only_known_actions_and_no_conditional_includes(profile: dict[str, Any]) -> None:
    for rule in profile["syscalls"]:
        assert rule["action"] in DENY_ACTIONS | {"SCMP_ACT_ALLOW"}, rule
        assert not rule.get("includes") and not rule.get("excludes"), rule


def test_it_allows_clone_only_without_namespace_flags(profile: dict[str, Any]) -> None:
    rules = _allowing_rules(profile, "clone")
    assert rules, "clone must be allowed for threads and processes"
    for rule in rules:
        masked = [a for a in rule.get("args", []) if a["op"] == "SCMP_CMP_MASKED_EQ" and a["index"] == 0]
        assert masked, rule
        for arg in masked:
            for flag, bit in CLONE_NAMESPACE_FLAGS.items():
                assert arg["value"] & bit, f"{flag} not covered by the clone mask"
            assert arg.get("valueTwo", 0) == 0  # the masked bits must all be clear


def test_it_covers_the_native_architectures(profile: dict[str, Any]) -> None:
    arches = {a["architecture"] for a in profile["archMap"]}
    assert "SCMP_ARCH_X86_64" in arches


def test_it_compiles_the_real_profile(tmp_path: Path, profile: dict[str, Any]) -> None:
    out = tmp_path / "p.bpf"
    skipped = compile_profile(profile, out)
    data = out.read_bytes()
    assert len(data) > 0 and len(data) % 8 == 0  # struct sock_filter is 8 bytes
    assert not set(skipped) & {"clone", "socket", "read", "write", "execve"}


def _mini_profile(names: list[str]) -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": json.loads(PROFILE_PATH.read_text())["archMap"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
    }


def test_it_skips_syscall_names_unknown_to_libseccomp(tmp_path: Path) -> None:
    with_unknown = tmp_path / "with.bpf"
    without = tmp_path / "without.bpf"
    skipped = compile_profile(
        _mini_profile(["read", "made_up_syscall_xyz", "write", "another_fake_call"]), with_unknown
    )
    assert skipped == ["made_up_syscall_xyz", "another_fake_call"]
    assert compile_profile(_mini_profile(["read", "write"]), without) == []
    # The unknown names change nothing: the program is the same as without them.
    assert with_unknown.read_bytes() == without.read_bytes()
    assert len(with_unknown.read_bytes()) % 8 == 0


def test_it_rejects_a_profile_rule_with_includes(tmp_path: Path) -> None:
    from sandbox import SandboxUnavailable

    profile = _mini_profile(["read"])
    profile["syscalls"][0]["includes"] = {"caps": ["CAP_SYS_ADMIN"]}
    with pytest.raises(SandboxUnavailable):
        compile_profile(profile, tmp_path / "x.bpf")
