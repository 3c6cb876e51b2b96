from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from devtools.testing import StandinServer
from payments_project.backoffice.tests.scenario import world


@pytest.fixture
def data(client: Client, stripe_standin: StandinServer, django_capture_on_commit_callbacks: Any) -> Any:
    """The scenario's world (payments_project.backoffice.tests.scenario), its events processed."""
    return world(client, stripe_standin, django_capture_on_commit_callbacks)
