from django.urls import path

from . import views

app_name = "playground"

urlpatterns = [
    path("", views.index, name="index"),
    path("playground/api/runs", views.RunsView.as_view(), name="runs"),
    path("playground/api/runs/<str:run_id>", views.RunView.as_view(), name="run"),
    path("playground/api/runs/<str:run_id>/events", views.RunEventsView.as_view(), name="run-events"),
]
