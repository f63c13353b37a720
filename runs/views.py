from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive (readiness, which checks dependencies, is /readyz)."""
    return JsonResponse({"status": "ok"})
