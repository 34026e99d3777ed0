from django.apps import AppConfig


class MigsupportConfig(AppConfig):
    name = "migsupport"
    verbose_name = "Alembic migration support"

    def ready(self) -> None:
        from migsupport.engine import remember_configured_names

        remember_configured_names()
