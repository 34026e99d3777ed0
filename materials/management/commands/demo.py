"""``manage.py demo``: a ready-to-browse database in one step.

Django's own tables come from Django's migrations and the domain tables from
Alembic's; then demo rows, and a superuser whose credentials are printed.
Running it again keeps the data and gives the superuser a new password.
With ``--addr`` (``make demo`` passes the server's), it first checks that the
demo server can listen there, and changes nothing if it cannot: a password
printed for a server that then fails to start would not be the running one's.
"""

from __future__ import annotations

import secrets
import socket
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from materials.models import DetectedMaterial


class Command(BaseCommand):
    help = "Migrate, load demo data and create a superuser, for a local demo."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--materials",
            type=int,
            default=2000,
            metavar="N",
            help="Detected materials to load into an empty database (default: 2000).",
        )
        parser.add_argument(
            "--username", default="admin", help="The superuser's name (default: admin)."
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, choices=tuple(connections))
        parser.add_argument(
            "--addr",
            metavar="ADDR",
            help="The address the demo server will listen on (ip:port or port, as runserver "
            "takes it); refuse, changing nothing, when it is in use.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["addr"]:
            problem = address_problem(options["addr"])
            if problem:
                raise CommandError(f"{problem}; nothing was changed")
        database = options["database"]
        verbosity = options["verbosity"]
        self.stdout.write(self.style.MIGRATE_HEADING("Django's tables (Django migrations):"))
        call_command(
            "migrate", database=database, verbosity=max(verbosity - 1, 0), interactive=False
        )
        self.stdout.write(self.style.MIGRATE_HEADING("Domain tables (Alembic):"))
        call_command("alembic_upgrade", database=database, verbosity=verbosity)

        if DetectedMaterial.objects.using(database).exists():
            self.stdout.write("Demo data: already loaded, kept as it is.")
        else:
            self.stdout.write(self.style.MIGRATE_HEADING("Demo data:"))
            call_command(
                "load_demo_data",
                materials=options["materials"],
                seed=7,
                database=database,
                verbosity=verbosity,
            )

        password = secrets.token_urlsafe(12)
        users = get_user_model()._default_manager.db_manager(database)
        user = users.filter(username=options["username"]).first()
        if user is None:
            users.create_superuser(options["username"], email="", password=password)
        else:
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save(using=database)
        self.stdout.write(
            self.style.SUCCESS(
                f"Superuser: {options['username']} / {password}  (log in at /admin/)"
            )
        )


def address_problem(addr: str) -> str | None:
    """Return why a server cannot listen on ``addr`` now, or None when it can.

    The check binds the address the way runserver will (``SO_REUSEADDR``),
    so a server already listening there is found, and a socket lingering
    after one stopped is not.
    """
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"{addr!r} is not an address the demo server can take (ip:port, or a port)"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            return (
                f"the demo server cannot listen on {addr}: {exc.strerror or exc} (is it already "
                "running? Stop it, or choose another address: make demo DEMO_ADDR=127.0.0.1:8001)"
            )
    return None
