from django.db import migrations, models


def copy_interval_from_plan(apps, schema_editor):
    StripePrice = apps.get_model("billing", "StripePrice")
    for price in StripePrice.objects.select_related("plan"):
        price.interval = price.plan.interval
        price.interval_count = price.plan.interval_count
        price.save(update_fields=["interval", "interval_count"])


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_payment_status_permission"),
    ]

    operations = [
        migrations.AddField(
            model_name="stripeprice",
            name="interval",
            field=models.CharField(
                choices=[("month", "Monthly"), ("year", "Yearly"), ("one_time", "One-time purchase")],
                default="month",
                max_length=16,
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="stripeprice",
            name="interval_count",
            field=models.PositiveSmallIntegerField(default=1),
        ),
        migrations.RunPython(copy_interval_from_plan, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="stripeprice", name="stripeprice_unique_amount"),
        migrations.AddConstraint(
            model_name="stripeprice",
            constraint=models.UniqueConstraint(
                fields=("plan", "currency", "amount", "interval", "interval_count"),
                name="stripeprice_unique_price",
            ),
        ),
    ]
