from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from migsupport.health import ReadinessView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # 200 while the database is up_to_date, 503 otherwise (a readiness probe).
    path("health/", ReadinessView.as_view(), name="health"),
]
