"""OpenAI list shape with `limit`, `after`, `order`; order is stable on (created_at, internal id)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.db.models import Model, Q, QuerySet
from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request

from .errors import APIError

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
# ASCII digits only: int() would also take " 5", "+5", "5_0" and other scripts' digits.
LIMIT_RE = re.compile(r"[0-9]{1,4}")


def parameters(what: str) -> list[OpenApiParameter]:
    """The documented `limit`, `after` and `order` of a list of `what`."""
    return [
        OpenApiParameter(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            description=f"How many {what}s, 1-{MAX_LIMIT}.",
        ),
        OpenApiParameter(
            "after",
            str,
            description=f"The id of one of your {what}s: list the {what}s after it in this order "
            "(400 `invalid_cursor` when there is no such object).",
        ),
        OpenApiParameter(
            "order", {"type": "string", "enum": ["desc", "asc"], "default": "desc"}, description="By creation time."
        ),
    ]


def paginate(request: Request, queryset: QuerySet[Any], render: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    raw_limit = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not LIMIT_RE.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise APIError(f"'limit' must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    limit = int(raw_limit)
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise APIError("'order' must be 'asc' or 'desc'.", param="order")
    after = request.query_params.get("after")
    if after:
        # PostgreSQL cannot even compare a string holding U+0000: such an id exists nowhere.
        anchor: Model | None = queryset.filter(public_id=after).first() if "\0" not in after else None
        if anchor is None:
            raise APIError(f"No such object for 'after': {after}.", param="after", code="invalid_cursor")
        created_at, pk = anchor.created_at, anchor.pk  # type: ignore[attr-defined]
        if order == "desc":
            queryset = queryset.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=pk))
        else:
            queryset = queryset.filter(Q(created_at__gt=created_at) | Q(created_at=created_at, pk__gt=pk))
    ordering = ("-created_at", "-pk") if order == "desc" else ("created_at", "pk")
    rows = list(queryset.order_by(*ordering)[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    data = [render(row) for row in rows]
    return {
        "object": "list",
        "data": data,
        "first_id": rows[0].public_id if rows else None,
        "last_id": rows[-1].public_id if rows else None,
        "has_more": has_more,
    }
