"""Helpers for the admin's searches; nothing here knows the models."""

from __future__ import annotations

import uuid

from django.utils.text import smart_split, unescape_string_literal


def parse_uuid(term: str) -> uuid.UUID | None:
    """Return ``term`` as a UUID, or None when it is not one."""
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


def search_terms(search_term: str) -> list[str]:
    """Split a search box value into terms, the way Django's admin does."""
    terms = []
    for bit in smart_split(search_term):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        terms.append(bit)
    return terms
