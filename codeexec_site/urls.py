from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.routers import SimpleRouter

from files.views import FileViewSet
from runs import views as run_views
from runs.metrics import metrics_view
from runs.views import RuntimesViewSet, RunViewSet, UsageViewSet

router = SimpleRouter(trailing_slash=False)
router.register("runs", RunViewSet, basename="run")
router.register("files", FileViewSet, basename="file")
router.register("runtimes", RuntimesViewSet, basename="runtime")
router.register("usage", UsageViewSet, basename="usage")

urlpatterns = [
    path("v1/openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("v1/", include(router.urls)),
    path("admin/", admin.site.urls),
    path("healthz", run_views.healthz),
    path("readyz", run_views.readyz),
    path("metrics", metrics_view, name="metrics"),  # a plain Django view: not in the OpenAPI schema
    path("", include("playground.urls")),
]

handler400 = "runs.errors.handler400"
handler403 = "runs.errors.handler403"
handler404 = "runs.errors.handler404"
handler500 = "runs.errors.handler500"
