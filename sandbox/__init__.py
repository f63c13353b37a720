"""codeexec's sandbox: run untrusted code under kernel-enforced limits. No Django in here.

from sandbox import RunSpec, SandboxConfig, get_backend
result = get_backend("bwrap", SandboxConfig()).run(RunSpec(language="python", code="print(1)"))
"""

from .backends import BACKEND_NAMES, Backend, SandboxConfig, get_backend
from .errors import InvalidSpec, SandboxError, SandboxUnavailable
from .languages import LANGUAGES, Language, all_languages, get_language
from .limits import DEFAULT_LIMITS, MAX_LIMITS, Limits, resolve_limits
from .result import Artifact, ErrorCode, RunError, RunResult, SkippedArtifact, Status, Usage
from .spec import InputFile, RunSpec, SourceFile

__all__ = [
    "BACKEND_NAMES",
    "DEFAULT_LIMITS",
    "LANGUAGES",
    "MAX_LIMITS",
    "Artifact",
    "Backend",
    "ErrorCode",
    "InputFile",
    "InvalidSpec",
    "Language",
    "Limits",
    "RunError",
    "RunResult",
    "RunSpec",
    "SandboxConfig",
    "SandboxError",
    "SandboxUnavailable",
    "SkippedArtifact",
    "SourceFile",
    "Status",
    "Usage",
    "all_languages",
    "get_backend",
    "get_language",
    "resolve_limits",
]
