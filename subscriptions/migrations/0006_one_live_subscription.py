"""At most one live subscription per user and per family, enforced by partial unique constraints.

Existing duplicates are not resolved here (that would cancel and refund at Stripe): the migration
stops and names them, so staff settle them first (cancel one of each pair in the admin).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import Count

LIVE = ("trialing", "active", "past_due", "unpaid", "paused", "suspended")


def refuse_existing_duplicates(apps, schema_editor):
    Subscription = apps.get_model("subscriptions", "Subscription")
    live = Subscription.objects.filter(status__in=LIVE)
    users = list(live.values("user_id").annotate(n=Count("id")).filter(n__gt=1).values_list("user_id", flat=True))
    families = list(
        live.exclude(family_id=None)
        .values("family_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("family_id", flat=True)
    )
    if users or families:
        raise RuntimeError(
            "Users with more than one live subscription: "
            f"{users[:50]}; families: {families[:50]}. Cancel the extra ones, then migrate again."
        )


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0005_stripe_event_inbox'),
        ('subscriptions', '0005_stripe_calls'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='subscription',
            name='duplicate_of',
            field=models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='subscriptions.subscription'),
        ),
        migrations.AddField(
            model_name='subscription',
            name='duplicate_settled_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(refuse_existing_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='subscription',
            constraint=models.UniqueConstraint(condition=models.Q(('status__in', ('trialing', 'active', 'past_due', 'unpaid', 'paused', 'suspended'))), fields=('user',), name='subscription_one_live_per_user'),
        ),
        migrations.AddConstraint(
            model_name='subscription',
            constraint=models.UniqueConstraint(condition=models.Q(('family__isnull', False), ('status__in', ('trialing', 'active', 'past_due', 'unpaid', 'paused', 'suspended'))), fields=('family',), name='subscription_one_live_per_family'),
        ),
    ]
