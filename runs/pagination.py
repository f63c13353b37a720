"""OpenAI list shape with `limit`, `after`, `order`; order is stable on (created_at, internal id)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import Model, Q, QuerySet
from rest_framework.request import Request

from .errors import APIError

MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def paginate(request: Request, queryset: QuerySet[Any], render: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    raw_limit = request.query_params.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise APIError("'limit' must be an integer from 1 to 100.", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise APIError("'limit' must be an integer from 1 to 100.", param="limit")
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise APIError("'order' must be 'asc' or 'desc'.", param="order")
    after = request.query_params.get("after")
    if after:
        anchor: Model | None = queryset.filter(public_id=after).first()
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
