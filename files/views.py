"""/v1/files, wire-compatible with OpenAI's Files API (the official SDK works against it)."""

from __future__ import annotations

import builtins
import hashlib
import mimetypes
import unicodedata
from typing import Any

from django.conf import settings
from django.core.files.base import File as DjangoFile
from django.db import transaction
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotAuthenticated
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from runs.auth import is_signed_link, limit_unauthenticated, request_key
from runs.errors import APIError, not_found
from runs.idempotency import Idempotency
from runs.models import ApiKey
from runs.pagination import paginate
from runs.pagination import parameters as list_parameters
from runs.render import render_file
from runs.serializers import ErrorSerializer, constant, deleted_serializer, list_serializer
from runs.views import IDEMPOTENCY_KEY

from .models import File
from .signing import signed_url, verify

UPLOAD_PURPOSES = [p for p in File.Purpose.values if p != File.Purpose.RUN_ARTIFACT]

FileObjectSerializer = inline_serializer(
    "FileObject",
    {
        "id": serializers.CharField(),
        "object": constant("file"),
        "bytes": serializers.IntegerField(),
        "created_at": serializers.IntegerField(),
        "filename": serializers.CharField(),
        "purpose": serializers.ChoiceField(choices=File.Purpose.values),
        "status": constant("processed"),
        "expires_at": serializers.IntegerField(allow_null=True),
        "status_details": serializers.CharField(allow_null=True),
    },
)
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid request."),
    401: OpenApiResponse(ErrorSerializer, description="Missing or wrong API key."),
    404: OpenApiResponse(ErrorSerializer, description="No such file for this key."),
    429: OpenApiResponse(ErrorSerializer, description="`rate_limit_exceeded`: the key's request rate (`Retry-After`)."),
}


def clean_filename(name: str) -> str:
    """The last path component, no control characters, at most 255 bytes; never empty."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    while len(name.encode()) > 255:
        name = name[:-1]
    return name if name not in ("", ".", "..") else "upload"


class FileViewSet(viewsets.ViewSet):
    lookup_field = "public_id"
    lookup_value_regex = "[^/]+"

    def get_parsers(self) -> builtins.list[Any]:
        if getattr(self, "action", None) == "create" or self.request is None or self.request.method == "POST":
            return [MultiPartParser(), FormParser()]
        return super().get_parsers()

    def _get(self, request: Request, public_id: str) -> File:
        # PostgreSQL cannot compare a string holding U+0000; no id has one.
        file = (
            File.objects.filter(owner=request_key(request), public_id=public_id).first()
            if "\0" not in public_id
            else None
        )
        if file is None:
            raise not_found("file", param="file_id")
        return file

    @extend_schema(
        request={
            "multipart/form-data": inline_serializer(
                "FileUpload",
                {"file": serializers.FileField(), "purpose": serializers.ChoiceField(choices=UPLOAD_PURPOSES)},
            )
        },
        parameters=[IDEMPOTENCY_KEY],
        responses={
            200: FileObjectSerializer,
            409: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused with another file, or in use."),
            413: OpenApiResponse(ErrorSerializer, description="File too large."),
            415: OpenApiResponse(ErrorSerializer, description="Not multipart/form-data."),
            **ERRORS,
        },
        summary="Upload a file",
    )
    def create(self, request: Request) -> Response:
        upload = request.FILES.get("file")
        purpose = request.data.get("purpose")
        if upload is None:
            raise APIError("Missing 'file' (multipart/form-data).", param="file", code="missing_required_parameter")
        if not purpose:
            raise APIError("Missing 'purpose'.", param="purpose", code="missing_required_parameter")
        if purpose not in UPLOAD_PURPOSES:
            raise APIError(
                f"Invalid purpose '{purpose}'. Expected one of: {', '.join(UPLOAD_PURPOSES)}.", param="purpose"
            )
        if upload.size is not None and upload.size > settings.MAX_UPLOAD_BYTES:
            raise APIError(
                f"File is larger than the limit of {settings.MAX_UPLOAD_BYTES} bytes.",
                413,
                code="file_too_large",
                param="file",
            )
        filename = clean_filename(upload.name or "upload")
        digest = hashlib.sha256()
        size = 0
        for chunk in upload.chunks():
            digest.update(chunk)
            size += len(chunk)
        upload.seek(0)
        key = request_key(request)
        payload = {"purpose": purpose, "filename": filename, "bytes": size, "sha256": digest.hexdigest()}
        idem = Idempotency.from_request(request, key, "files", payload)
        first_id = idem.begin() if idem else None
        if first_id is not None:
            return Response(render_file(self._get(request, first_id)), status=status.HTTP_200_OK)
        record = File(
            owner=key,
            filename=filename,
            bytes=size,
            purpose=purpose,
            content_type=mimetypes.guess_type(filename)[0] or "application/octet-stream",
            sha256=digest.hexdigest(),
        )
        try:
            record.blob.save(record.public_id, DjangoFile(upload), save=False)
            try:
                record.save()
            except Exception:
                record.blob.delete(save=False)
                raise
        except BaseException:
            if idem:
                idem.abandon()
            raise
        if idem:
            idem.complete(record.public_id)
        return Response(render_file(record), status=status.HTTP_200_OK)

    @extend_schema(
        parameters=[
            OpenApiParameter("purpose", str, enum=File.Purpose.values, description="Only files of this purpose."),
            *list_parameters("file"),
        ],
        responses={200: list_serializer("FileList", FileObjectSerializer), **ERRORS},
        summary="List files",
    )
    def list(self, request: Request) -> Response:
        queryset = File.objects.filter(owner=request_key(request))
        purpose = request.query_params.get("purpose")
        if purpose is not None:
            if purpose not in File.Purpose.values:
                raise APIError(
                    f"Invalid purpose '{purpose}'. Expected one of: {', '.join(File.Purpose.values)}.", param="purpose"
                )
            queryset = queryset.filter(purpose=purpose)
        return Response(paginate(request, queryset, render_file))

    @extend_schema(responses={200: FileObjectSerializer, **ERRORS}, summary="Retrieve a file")
    def retrieve(self, request: Request, public_id: str) -> Response:
        return Response(render_file(self._get(request, public_id)))

    def get_permissions(self) -> builtins.list[Any]:
        # A signed link is its own authorization; `content` checks key or signature itself.
        if getattr(self, "action", None) == "content":
            return [AllowAny()]
        return builtins.list(super().get_permissions())

    @extend_schema(
        parameters=[
            OpenApiParameter("expires", int, description="With `signature`: the link's expiry (Unix seconds)."),
            OpenApiParameter("signature", str, description="HMAC of a signed link; no Authorization needed."),
        ],
        responses={
            (200, "*/*"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="The raw bytes, with the file's Content-Type (from its name; application/octet-stream "
                "when unknown) and an attachment Content-Disposition.",
            ),
            403: OpenApiResponse(ErrorSerializer, description="Signed link tampered, foreign or expired."),
            **ERRORS,
            500: OpenApiResponse(ErrorSerializer, description="`storage_error`: the content is missing from storage."),
        },
        summary="Download a file's content (with a key, or through a signed link)",
    )
    @action(detail=True, methods=["get"])
    def content(self, request: Request, public_id: str) -> FileResponse:
        if is_signed_link(request):
            given = request.query_params.get("signature", "")
            # A signature is hex; hmac.compare_digest raises TypeError on non-ASCII text.
            problem = (
                verify(public_id, request.query_params.get("expires", ""), given)
                if given.isascii()
                else "The link's signature is not valid."
            )
            if problem is not None:
                limit_unauthenticated(request)  # a bad link counts as a bad key would (a 429 once over)
                raise APIError(problem, 403, code="invalid_signature", param="signature")
            file = File.objects.filter(public_id=public_id).first()
            if file is None:
                raise not_found("file", param="file_id")
        else:
            if not isinstance(request.user, ApiKey):
                raise NotAuthenticated()
            file = self._get(request, public_id)
        try:
            handle = file.blob.open("rb")
        except OSError as exc:
            raise APIError("The file's content is missing from storage.", 500, code="storage_error") from exc
        return content_response(file, handle)

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "SignedUrl", {"url": serializers.CharField(), "expires_at": serializers.IntegerField()}
            ),
            **ERRORS,
        },
        summary="Mint a fresh signed download link",
    )
    @action(detail=True, methods=["post"], url_path="url")
    def mint_url(self, request: Request, public_id: str) -> Response:
        file = self._get(request, public_id)
        url, expires_at = signed_url(file.public_id)
        return Response({"url": url, "expires_at": expires_at})

    @extend_schema(responses={200: deleted_serializer("FileDeleted", "file"), **ERRORS}, summary="Delete a file")
    def destroy(self, request: Request, public_id: str) -> Response:
        file = self._get(request, public_id)
        blob = file.blob
        with transaction.atomic():
            file.delete()
        blob.delete(save=False)
        return Response({"id": public_id, "object": "file", "deleted": True})


def content_response(file: File, handle: Any) -> FileResponse:
    """Raw bytes as a download: attachment disposition and nosniff, so nothing renders in our origin."""
    response = FileResponse(handle, as_attachment=True, filename=file.filename, content_type=file.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
