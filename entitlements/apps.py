from collections.abc import Callable

from django.apps import AppConfig
from django.dispatch import Signal


class EntitlementsConfig(AppConfig):
    name = "entitlements"
    verbose_name = "Entitlements"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from billing.models import Feature
        from billing.payments import signals as billing_signals
        from entitlements import receivers
        from entitlements.models import Entitlement
        from subscriptions import signals

        pairs: list[tuple[Signal, Callable[..., None]]] = [
            (signals.subscription_activated, receivers.on_subscription_activated),
            (signals.subscription_renewed, receivers.on_subscription_renewed),
            (signals.subscription_suspended, receivers.on_subscription_suspended),
            (signals.subscription_reactivated, receivers.on_subscription_reactivated),
            (signals.subscription_cancelled, receivers.on_subscription_cancelled),
            (signals.subscription_plan_changed, receivers.on_subscription_plan_changed),
            (signals.subscription_grace_extended, receivers.on_subscription_grace_extended),
            (signals.family_member_added, receivers.on_family_member_changed),
            (signals.family_member_removed, receivers.on_family_member_changed),
            (billing_signals.payment_succeeded, receivers.on_payment_succeeded),
            (billing_signals.payment_refunded, receivers.on_payment_refunded),
        ]
        for signal, receiver in pairs:
            signal.connect(receiver, dispatch_uid=f"entitlements.{receiver.__name__}")
        post_save.connect(
            receivers.on_feature_changed, sender=Feature, dispatch_uid="entitlements.feature_saved"
        )
        # Entitlement rows saved one by one outside the services (admin forms, cascades).
        for name, signal_ in (("saved", post_save), ("deleted", post_delete)):
            signal_.connect(
                receivers.on_entitlement_written,
                sender=Entitlement,
                dispatch_uid=f"entitlements.Entitlement.{name}",
            )
        post_delete.connect(
            receivers.on_feature_changed, sender=Feature, dispatch_uid="entitlements.feature_deleted"
        )
