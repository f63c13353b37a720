"""The example programs of the playground's picker: a hello per language that reads stdin, and a few
that show what the sandbox reports (an image artifact, a timeout, a compile error)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    title: str
    code: str
    stdin: str = ""
    # Limits the example is meant to run with (the page fills them in), e.g. a short timeout.
    limits: dict[str, int] = dataclasses.field(default_factory=dict)


PYTHON_HELLO = """\
import sys

name = sys.stdin.read().strip() or "world"
print(f"Hello, {name}!")
"""

PYTHON_PLOT = """\
# Files written to outputs/ come back as artifacts; images are previewed below.
import matplotlib.pyplot as plt
import numpy as np

x = np.linspace(0, 2 * np.pi, 200)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(x, np.sin(x), label="sin")
ax.plot(x, np.cos(x), label="cos")
ax.legend()
fig.tight_layout()
fig.savefig("outputs/plot.png", dpi=100)
print("wrote outputs/plot.png")
"""

PYTHON_LOOP = """\
# Runs until the sandbox stops it at timeout_ms.
while True:
    pass
"""

NODE_HELLO = """\
const input = require("fs").readFileSync(0, "utf8").trim();
console.log(`Hello, ${input || "world"}!`);
"""

RUBY_HELLO = """\
name = $stdin.read.to_s.strip
name = "world" if name.empty?
puts "Hello, #{name}!"
"""

PHP_HELLO = """\
<?php
$name = trim(stream_get_contents(STDIN));
if ($name === "") {
    $name = "world";
}
echo "Hello, {$name}!\\n";
"""

GO_HELLO = """\
package main

import (
    "fmt"
    "io"
    "os"
    "strings"
)

func main() {
    data, _ := io.ReadAll(os.Stdin)
    name := strings.TrimSpace(string(data))
    if name == "" {
        name = "world"
    }
    fmt.Printf("Hello, %s!\\n", name)
}
"""

GO_COMPILE_ERROR = """\
package main

import "fmt"

func main() {
    unused := 42
    fmt.Println("this never compiles")
}
"""

EXAMPLES: dict[str, list[Example]] = {
    "python": [
        Example("python-hello", "Hello (reads stdin)", PYTHON_HELLO, stdin="Ada"),
        Example("python-plot", "Plot (matplotlib PNG artifact)", PYTHON_PLOT),
        Example("python-loop", "Infinite loop (timeout)", PYTHON_LOOP, limits={"timeout_ms": 1000}),
    ],
    "node": [Example("node-hello", "Hello (reads stdin)", NODE_HELLO, stdin="Ada")],
    "ruby": [Example("ruby-hello", "Hello (reads stdin)", RUBY_HELLO, stdin="Ada")],
    "php": [Example("php-hello", "Hello (reads stdin)", PHP_HELLO, stdin="Ada")],
    "go": [
        Example("go-hello", "Hello (reads stdin)", GO_HELLO, stdin="Ada"),
        Example("go-compile-error", "Compile error", GO_COMPILE_ERROR),
    ],
}
