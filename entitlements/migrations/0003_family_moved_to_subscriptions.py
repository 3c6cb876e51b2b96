"""Family and FamilyMember now belong to the subscriptions app (state only: no table changes)."""

import django.db.models.deletion
from django.db import migrations, models


def content_types_follow(apps, schema_editor):
    # Keeps the permissions staff were given on families (fresh databases have none yet).
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in ("family", "familymember"):
        if not ContentType.objects.filter(app_label="subscriptions", model=model).exists():
            ContentType.objects.filter(app_label="entitlements", model=model).update(app_label="subscriptions")


class Migration(migrations.Migration):
    dependencies = [
        ("entitlements", "0002_initial"),
        ("subscriptions", "0003_family_moved_here"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="entitlement",
                    name="family",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="entitlements",
                        to="subscriptions.family",
                    ),
                ),
                migrations.DeleteModel(name="FamilyMember"),
                migrations.DeleteModel(name="Family"),
            ],
        ),
        migrations.RunPython(content_types_follow, migrations.RunPython.noop),
    ]
