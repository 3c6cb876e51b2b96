"""The inbound Stripe event inbox is `StripeEvent` (was `WebhookEvent`): "webhook" is kept for the
outbound deliveries to come. Rows, ids and granted permissions are kept. The API permission
`act_for_any_user` moves to the accounts app (accounts 0001 copies who held it)."""

from django.db import migrations


def permissions_follow(apps, schema_editor):
    # RenameModel renames the content type; the permission codenames keep the old model name.
    Permission = apps.get_model("auth", "Permission")
    for verb in ("add", "change", "delete", "view"):
        Permission.objects.filter(content_type__app_label="billing", codename=f"{verb}_webhookevent").update(
            codename=f"{verb}_stripeevent", name=f"Can {verb} stripe event"
        )


def beat_entry_renamed(apps, schema_editor):
    # The database scheduler keeps entries by name: the old one would call a task that is gone.
    try:
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    except LookupError:
        return
    PeriodicTask.objects.filter(name="billing-webhook-events-sweep").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_stripe_price_interval"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RenameModel(old_name="WebhookEvent", new_name="StripeEvent"),
        migrations.RenameIndex(model_name="stripeevent", new_name="stripeevent_status", old_name="webhookevent_status"),
        migrations.AlterModelOptions(
            name="plan",
            options={"ordering": ["sort_order", "code"]},
        ),
        migrations.RunPython(permissions_follow, migrations.RunPython.noop),
        migrations.RunPython(beat_entry_renamed, migrations.RunPython.noop),
    ]
