from __future__ import annotations

import factory
from django.utils import timezone

from entitlements.models import Entitlement
from payments_project.accounts.tests.factories import UserFactory


class EntitlementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Entitlement

    user = factory.SubFactory(UserFactory)
    feature = factory.SubFactory("billing.catalog.tests.factories.FeatureFactory")
    source = Entitlement.Source.MANUAL
    status = Entitlement.Status.ACTIVE
    granted_at = factory.LazyFunction(timezone.now)
