"""The family tables take this app's names, now that no other app's state claims them."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0003_family_moved_here"),
        ("entitlements", "0003_family_moved_to_subscriptions"),
    ]

    operations = [
        migrations.AlterModelTable(name="family", table=None),
        migrations.AlterModelTable(name="familymember", table=None),
    ]
