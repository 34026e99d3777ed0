"""The admin's users, made with exactly the permissions a test names."""

from __future__ import annotations

from django.contrib.auth.models import Permission, User


def staff_user(username: str, *codenames: str) -> User:
    """Return a new staff user holding the ``materials`` permissions ``codenames``, and no other.

    The tests log it in with ``force_login``: its password is unusable.
    """
    user = User.objects.create_user(username, password=None, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="materials", codename__in=codenames)
    )
    assert user.user_permissions.count() == len(codenames)
    return user
