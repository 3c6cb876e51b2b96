"""Families move from the entitlements app to this one (state only: the tables stay as they are).

With Family here, imports between the domain apps run one way (billing <- subscriptions <-
entitlements). entitlements 0003 drops the models from its own state; 0004 renames the tables.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0002_announced_period_end"),
        ("entitlements", "0002_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="Family",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(blank=True, max_length=200)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "owner",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="owned_families",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={"verbose_name_plural": "families", "db_table": "entitlements_family"},
                ),
                migrations.CreateModel(
                    name="FamilyMember",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("joined_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "family",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="members",
                                to="subscriptions.family",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="family_membership",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={"db_table": "entitlements_familymember"},
                ),
                migrations.AddConstraint(
                    model_name="family",
                    constraint=models.UniqueConstraint(fields=("owner",), name="family_one_per_owner"),
                ),
                migrations.AddConstraint(
                    model_name="familymember",
                    constraint=models.UniqueConstraint(fields=("user",), name="familymember_one_family_per_user"),
                ),
                migrations.AlterField(
                    model_name="subscription",
                    name="family",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="subscriptions",
                        to="subscriptions.family",
                    ),
                ),
            ],
        ),
    ]
