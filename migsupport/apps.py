from django.apps import AppConfig


class MigsupportConfig(AppConfig):
    name = "migsupport"
    verbose_name = "Alembic migration support"
