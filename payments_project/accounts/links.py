"""Links to a customer's page in the staff console (payments_project.backoffice), for every app's
admin pages: by URL name, so nothing here imports the page's own module."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html


def customer_url(user_id: int) -> str:
    return reverse("admin:accounts_customer_change", args=[user_id])


def customer_link(user_id: int | None, label: object) -> str:
    """'<a href=customer page>label</a>', or the label alone when there is no user."""
    if not user_id:
        return str(label or "-")
    return format_html('<a href="{}">{}</a>', customer_url(user_id), label)
