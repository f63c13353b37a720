"""Content negotiation for the API (its own module: DRF imports it while loading its settings)."""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.request import Request


class FirstRendererNegotiation(BaseContentNegotiation):
    """Ignore Accept: every answer is JSON (or a file's raw bytes), as with OpenAI's API.

    The openai SDK asks for `application/binary` when downloading content; refusing that with 406
    would break `files.content`.
    """

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request: Request, renderers: Any, format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type
