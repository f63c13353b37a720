from django.contrib import admin
from django.urls import path

from runs import views as run_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", run_views.healthz),
]
