"""Every language runs for real in the sandbox: output, stdin, argv, exit codes, artifacts,
extra sources, read-only inputs, Python's scientific stack, Go's build step and runtime versions."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from sandbox import Backend, ErrorCode, RunResult, Status
from sandbox.spec import InputFile, SourceFile

LANGS = ["python", "node", "ruby", "php", "go"]


def _src(code: str) -> str:
    return textwrap.dedent(code).lstrip("\n")


def _assert_succeeded(result: RunResult) -> None:
    assert result.status == Status.SUCCEEDED, (result.status, result.error, result.stderr[-2000:])
    assert result.exit_code == 0
    assert result.signal is None
    assert result.error is None


HELLO = {
    "python": 'print("hello world")\n',
    "node": 'console.log("hello world");\n',
    "ruby": 'puts "hello world"\n',
    "php": '<?php\necho "hello world\\n";\n',
    "go": _src("""
        package main

        import "fmt"

        func main() { fmt.Println("hello world") }
        """),
}

# Reads all of stdin and prints it back reversed line by line, with the byte count.
STDIN = {
    "python": _src("""
        import sys
        data = sys.stdin.read()
        lines = data.splitlines()
        print(len(data.encode()), "|".join(reversed(lines)))
        """),
    "node": _src("""
        const data = require("fs").readFileSync(0);
        const lines = data.toString("utf8").split("\\n").filter((l) => l.length > 0);
        console.log(data.length + " " + lines.reverse().join("|"));
        """),
    "ruby": _src("""
        data = $stdin.read
        puts "#{data.bytesize} #{data.split("\\n").reverse.join("|")}"
        """),
    "php": _src("""
        <?php
        $data = stream_get_contents(STDIN);
        $lines = array_reverse(explode("\\n", rtrim($data, "\\n")));
        echo strlen($data) . " " . implode("|", $lines) . "\\n";
        """),
    "go": _src("""
        package main

        import (
            "fmt"
            "io"
            "os"
            "strings"
        )

        func main() {
            data, err := io.ReadAll(os.Stdin)
            if err != nil {
                panic(err)
            }
            lines := strings.Split(strings.TrimRight(string(data), "\\n"), "\\n")
            for i, j := 0, len(lines)-1; i < j; i, j = i+1, j-1 {
                lines[i], lines[j] = lines[j], lines[i]
            }
            fmt.Println(len(data), strings.Join(lines, "|"))
        }
        """),
}

# Prints the user's arguments (not the interpreter's or the script's name), one per line, bracketed.
ARGS = {
    "python": "import sys\nfor a in sys.argv[1:]:\n    print(f'[{a}]')\n",
    "node": "for (const a of process.argv.slice(2)) console.log(`[${a}]`);\n",
    "ruby": 'ARGV.each { |a| puts "[#{a}]" }\n',
    "php": '<?php\nforeach (array_slice($argv, 1) as $a) { echo "[$a]\\n"; }\n',
    "go": _src("""
        package main

        import (
            "fmt"
            "os"
        )

        func main() {
            for _, a := range os.Args[1:] {
                fmt.Printf("[%s]\\n", a)
            }
        }
        """),
}

EXIT_3 = {
    "python": "import sys\nprint('before exit')\nsys.exit(3)\n",
    "node": "console.log('before exit');\nprocess.exit(3);\n",
    "ruby": "puts 'before exit'\nexit 3\n",
    "php": '<?php\necho "before exit\\n";\nexit(3);\n',
    "go": _src("""
        package main

        import (
            "fmt"
            "os"
        )

        func main() {
            fmt.Println("before exit")
            os.Exit(3)
        }
        """),
}

# An uncaught exception (Go: a panic) carrying the marker "boom-marker".
UNCAUGHT = {
    "python": "raise ValueError('boom-marker')\n",
    "node": "throw new Error('boom-marker');\n",
    "ruby": "raise ArgumentError, 'boom-marker'\n",
    "php": "<?php\nthrow new RuntimeException('boom-marker');\n",
    "go": 'package main\n\nfunc main() { panic("boom-marker") }\n',
}

# Writes outputs/result.txt with a language-specific line, creating outputs/ if needed.
ARTIFACT = {
    "python": _src("""
        import os
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/result.txt", "w") as f:
            f.write("artifact from python\\n")
        """),
    "node": _src("""
        const fs = require("fs");
        fs.mkdirSync("outputs", { recursive: true });
        fs.writeFileSync("outputs/result.txt", "artifact from node\\n");
        """),
    "ruby": _src("""
        Dir.mkdir("outputs") unless Dir.exist?("outputs")
        File.write("outputs/result.txt", "artifact from ruby\\n")
        """),
    "php": _src("""
        <?php
        if (!is_dir("outputs")) { mkdir("outputs"); }
        file_put_contents("outputs/result.txt", "artifact from php\\n");
        """),
    "go": _src("""
        package main

        import "os"

        func main() {
            if err := os.MkdirAll("outputs", 0o755); err != nil {
                panic(err)
            }
            if err := os.WriteFile("outputs/result.txt", []byte("artifact from go\\n"), 0o644); err != nil {
                panic(err)
            }
        }
        """),
}

# The entry file uses a helper from a second source file: greet("sources") -> "hi sources from <lang>".
SOURCES = {
    "python": (
        "from util import greet\nprint(greet('sources'))\n",
        (SourceFile("util.py", "def greet(name):\n    return f'hi {name} from python'\n"),),
    ),
    "node": (
        "const { greet } = require('./util.js');\nconsole.log(greet('sources'));\n",
        (SourceFile("util.js", "module.exports = { greet: (n) => `hi ${n} from node` };\n"),),
    ),
    "ruby": (
        "require_relative 'util'\nputs greet('sources')\n",
        (SourceFile("util.rb", 'def greet(name)\n  "hi #{name} from ruby"\nend\n'),),
    ),
    "php": (
        "<?php\nrequire 'util.php';\necho greet('sources') . \"\\n\";\n",
        (SourceFile("util.php", '<?php\nfunction greet($n) { return "hi $n from php"; }\n'),),
    ),
    "go": (
        'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println(greet("sources")) }\n',
        (SourceFile("util.go", 'package main\n\nfunc greet(n string) string { return "hi " + n + " from go" }\n'),),
    ),
}

# Prints /work/inputs/data/in.csv, then tries to append to it and to create a new file beside it;
# prints "read-only" only if both writes were refused.
INPUTS = {
    "python": _src("""
        p = "/work/inputs/data/in.csv"
        print(open(p).read(), end="")
        refused = 0
        for path, mode in ((p, "a"), ("/work/inputs/data/new.txt", "w")):
            try:
                with open(path, mode) as f:
                    f.write("x")
            except OSError:
                refused += 1
        print("read-only" if refused == 2 else f"WRITABLE {refused}")
        """),
    "node": _src("""
        const fs = require("fs");
        const p = "/work/inputs/data/in.csv";
        process.stdout.write(fs.readFileSync(p, "utf8"));
        let refused = 0;
        for (const path of [p, "/work/inputs/data/new.txt"]) {
            try { fs.appendFileSync(path, "x"); } catch (e) { refused += 1; }
        }
        console.log(refused === 2 ? "read-only" : "WRITABLE " + refused);
        """),
    "ruby": _src("""
        p = "/work/inputs/data/in.csv"
        print File.read(p)
        refused = 0
        [p, "/work/inputs/data/new.txt"].each do |path|
          begin
            File.open(path, "a") { |f| f.write("x") }
          rescue SystemCallError
            refused += 1
          end
        end
        puts(refused == 2 ? "read-only" : "WRITABLE #{refused}")
        """),
    "php": _src("""
        <?php
        $p = "/work/inputs/data/in.csv";
        echo file_get_contents($p);
        $refused = 0;
        foreach ([$p, "/work/inputs/data/new.txt"] as $path) {
            if (@file_put_contents($path, "x", FILE_APPEND) === false) { $refused++; }
        }
        echo ($refused === 2 ? "read-only" : "WRITABLE $refused") . "\\n";
        """),
    "go": _src("""
        package main

        import (
            "fmt"
            "os"
        )

        func main() {
            p := "/work/inputs/data/in.csv"
            data, err := os.ReadFile(p)
            if err != nil {
                panic(err)
            }
            fmt.Print(string(data))
            refused := 0
            for _, path := range []string{p, "/work/inputs/data/new.txt"} {
                f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
                if err != nil {
                    refused++
                    continue
                }
                f.Write([]byte("x"))
                f.Close()
            }
            if refused == 2 {
                fmt.Println("read-only")
            } else {
                fmt.Printf("WRITABLE %d\\n", refused)
            }
        }
        """),
}

# Prints the version of the runtime executing the program, in the form backend.versions() uses.
VERSION = {
    "python": "import platform\nprint(platform.python_version())\n",
    "node": "console.log(process.versions.node);\n",
    "ruby": "puts RUBY_VERSION\n",
    "php": '<?php\necho PHP_VERSION . "\\n";\n',
    "go": _src("""
        package main

        import (
            "fmt"
            "runtime"
            "strings"
        )

        func main() { fmt.Println(strings.TrimPrefix(runtime.Version(), "go")) }
        """),
}


@pytest.mark.parametrize("lang", LANGS)
def test_it_runs_hello_world(run, lang: str) -> None:
    result = run(lang, HELLO[lang])
    _assert_succeeded(result)
    assert result.stdout == "hello world\n"
    assert result.stdout_truncated is False


@pytest.mark.parametrize("lang", LANGS)
def test_it_delivers_stdin(run, lang: str) -> None:
    stdin = "first line\nsecond line\nthird ünïcode line\n"
    result = run(lang, STDIN[lang], stdin=stdin)
    _assert_succeeded(result)
    assert result.stdout == f"{len(stdin.encode())} third ünïcode line|second line|first line\n"


@pytest.mark.parametrize("lang", LANGS)
def test_it_passes_args_in_argv(run, lang: str) -> None:
    args = ("alpha", "two words", "--flag=x", "", "ünï $HOME `id`")
    result = run(lang, ARGS[lang], args=args)
    _assert_succeeded(result)
    assert result.stdout == "".join(f"[{a}]\n" for a in args)


@pytest.mark.parametrize("lang", LANGS)
def test_it_reports_exit_code_3_as_failed(run, lang: str) -> None:
    result = run(lang, EXIT_3[lang])
    assert result.status == Status.FAILED, (result.status, result.error, result.stderr[-2000:])
    assert result.exit_code == 3
    assert result.signal is None
    assert result.error is None
    assert result.stdout == "before exit\n"


@pytest.mark.parametrize("lang", LANGS)
def test_it_reports_an_uncaught_exception_as_failed(run, lang: str) -> None:
    result = run(lang, UNCAUGHT[lang])
    assert result.status == Status.FAILED, (result.status, result.error, result.stderr[-2000:])
    assert result.error is None  # the code's fault, not the service's; for Go not a compile error
    assert result.signal is None
    assert result.exit_code not in (None, 0)
    assert "boom-marker" in result.stderr + result.stdout


@pytest.mark.parametrize("lang", LANGS)
def test_it_collects_an_artifact_written_to_outputs(run, lang: str, tmp_path: Path) -> None:
    result = run(lang, ARTIFACT[lang])
    _assert_succeeded(result)
    expected = f"artifact from {lang}\n".encode()
    assert [a.path for a in result.artifacts] == ["outputs/result.txt"]
    artifact = result.artifacts[0]
    assert artifact.bytes == len(expected)
    assert artifact.sha256 == hashlib.sha256(expected).hexdigest()
    assert artifact.content_type == "text/plain"
    assert artifact.local_path is not None
    local = Path(artifact.local_path)
    assert local == tmp_path / "artifacts" / "outputs" / "result.txt"
    assert local.read_bytes() == expected
    assert result.usage.artifact_bytes == len(expected)
    assert result.skipped_artifacts == []


@pytest.mark.parametrize("lang", LANGS)
def test_it_makes_extra_sources_usable(run, lang: str) -> None:
    code, sources = SOURCES[lang]
    result = run(lang, code, sources=sources)
    _assert_succeeded(result)
    assert result.stdout == f"hi sources from {lang}\n"


def test_it_imports_python_sources_from_nested_directories(run) -> None:
    code = "from lib.helpers import double\nprint(double(21))\n"
    result = run("python", code, sources=(SourceFile("lib/helpers.py", "def double(x):\n    return 2 * x\n"),))
    _assert_succeeded(result)
    assert result.stdout == "42\n"


@pytest.mark.parametrize("lang", LANGS)
def test_it_stages_input_files_read_only(run, lang: str) -> None:
    content = b"a,b\n1,2\n"
    result = run(lang, INPUTS[lang], files=(InputFile.from_bytes("data/in.csv", content),))
    _assert_succeeded(result)
    assert result.stdout == content.decode() + "read-only\n"


def test_it_lists_input_files_under_work_inputs(run) -> None:
    code = _src("""
        import os
        for root, dirs, files in sorted(os.walk("/work/inputs")):
            for name in sorted(files):
                path = os.path.join(root, name)
                print(os.path.relpath(path, "/work/inputs"), os.path.getsize(path), open(path, "rb").read().hex())
        """)
    files = (InputFile.from_bytes("a.bin", b"\x00\xff\x10"), InputFile.from_bytes("deep/er/b.txt", b"hello"))
    result = run("python", code, files=files)
    _assert_succeeded(result)
    assert result.stdout == "a.bin 3 00ff10\ndeep/er/b.txt 5 68656c6c6f\n"


PLOT = _src("""
    import sys
    import warnings
    warnings.simplefilter("always")
    import numpy as np
    import pandas as pd
    import matplotlib
    import matplotlib.pyplot as plt

    df = pd.DataFrame({"x": np.arange(10), "y": np.arange(10) ** 2})
    fig, ax = plt.subplots(figsize=(3, 2), dpi=50)
    ax.plot(df["x"], df["y"])
    ax.set_title("squares")
    fig.savefig("outputs/plot.png")
    print(matplotlib.get_backend().lower(), int(df["y"].sum()), np.__version__ != "", pd.__version__ != "")
    """)


def test_it_runs_numpy_pandas_and_matplotlib_and_collects_the_png(run, tmp_path: Path) -> None:
    result = run("python", PLOT, timeout_ms=30_000, cpu_ms=30_000, memory_mb=512)
    _assert_succeeded(result)
    assert result.stdout == "agg 285 True True\n"
    assert [a.path for a in result.artifacts] == ["outputs/plot.png"]
    artifact = result.artifacts[0]
    assert artifact.content_type == "image/png"
    data = Path(artifact.local_path or "").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert artifact.bytes == len(data) > 100
    assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    # The prebuilt read-only font cache is used: no per-run rebuild, no complaint about MPLCONFIGDIR.
    assert "Matplotlib is building the font cache" not in result.stderr
    assert "MPLCONFIGDIR" not in result.stderr
    assert "font cache" not in result.stderr.lower()


def test_it_uses_the_prebuilt_matplotlib_font_cache(run) -> None:
    code = _src("""
        import os
        import matplotlib
        from matplotlib import font_manager
        cache = matplotlib.get_cachedir()
        names = sorted(n for n in os.listdir(cache) if n.startswith("fontlist-"))
        print(cache, names != [], len(font_manager.fontManager.ttflist) > 0)
        """)
    result = run("python", code, timeout_ms=30_000, cpu_ms=30_000, memory_mb=512)
    _assert_succeeded(result)
    assert result.stdout == "/tmp/.matplotlib True True\n"
    assert "building the font cache" not in result.stderr


def test_it_reports_a_go_compile_error_with_the_compiler_message(run) -> None:
    code = 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println(undefinedThing)\n}\n'
    result = run("go", code)
    assert result.status == Status.FAILED
    assert result.error is not None
    assert result.error.code == ErrorCode.COMPILE_ERROR
    assert "main.go" in result.stderr
    assert "undefinedThing" in result.stderr
    assert result.stdout == ""
    assert result.artifacts == []


def test_it_tells_a_go_runtime_panic_from_a_compile_error(run) -> None:
    code = _src("""
        package main

        import "fmt"

        func main() {
            fmt.Println("compiled and running")
            var m map[string]int
            m["x"] = 1
        }
        """)
    result = run("go", code)
    assert result.status == Status.FAILED
    assert result.error is None
    assert result.exit_code == 2
    assert result.stdout == "compiled and running\n"
    assert "panic: assignment to entry in nil map" in result.stderr


def test_it_reports_a_version_for_every_language(backend: Backend) -> None:
    versions = backend.versions()
    assert set(versions) == set(LANGS)
    for lang in LANGS:
        assert versions[lang], lang
        assert versions[lang] != "unavailable", lang
        assert versions[lang][0].isdigit(), (lang, versions[lang])


@pytest.mark.parametrize("lang", LANGS)
def test_it_reports_the_version_that_really_runs(run, backend: Backend, lang: str) -> None:
    result = run(lang, VERSION[lang])
    _assert_succeeded(result)
    assert result.stdout.strip() == backend.versions()[lang]


def test_it_caps_go_compiler_output_at_max_output_bytes(run) -> None:
    body = "\n".join(f"\tundefinedName{i}()" for i in range(8))
    result = run("go", f"package main\n\nfunc main() {{\n{body}\n}}\n", max_output_bytes=120)
    assert result.status == Status.FAILED
    assert result.error is not None and result.error.code == ErrorCode.COMPILE_ERROR
    assert result.stderr_truncated is True
    assert 0 < len(result.stderr.encode()) <= 120
    assert "main.go" in result.stderr
