from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from billing.catalog.services import CatalogError, catalog_load
from billing.models import (
    Feature,
    MeteredPrice,
    Plan,
    PlanFeature,
    Price,
    PricingZone,
    ZoneCountry,
    ZonePrice,
)

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo_catalog.yaml"


def _counts() -> dict[str, int]:
    return {
        "features": Feature.objects.count(),
        "plans": Plan.objects.count(),
        "plan_features": PlanFeature.objects.count(),
        "prices": Price.objects.count(),
        "zones": PricingZone.objects.count(),
        "zone_countries": ZoneCountry.objects.count(),
        "zone_prices": ZonePrice.objects.count(),
        "metered_prices": MeteredPrice.objects.count(),
    }


@pytest.mark.django_db
def test_catalog_load_twice_leaves_the_same_rows() -> None:
    # given the demo catalog file
    data = yaml.safe_load(DEMO.read_text())

    # when it is loaded twice
    first = catalog_load(data=data)
    after_first = _counts()
    second = catalog_load(data=data)

    # then the second run creates and updates nothing, and no row is duplicated
    assert first.created == {
        "features": 5,
        "plans": 4,
        "plan_features": 11,
        "prices": 16,
        "zones": 5,
        "zone_countries": 19,
        "zone_prices": 1,
        "metered_prices": 5,
    }
    assert second.created == {}
    assert second.updated == {}
    assert (
        _counts()
        == after_first
        == {
            "features": 5,
            "plans": 4,
            "plan_features": 11,
            "prices": 16,
            "zones": 5,
            "zone_countries": 19,
            "zone_prices": 1,
            "metered_prices": 5,
        }
    )


@pytest.mark.django_db
def test_catalog_load_applies_changes_and_drops_what_the_file_no_longer_lists() -> None:
    # given a loaded catalog
    data = yaml.safe_load(DEMO.read_text())
    catalog_load(data=data)

    # when the Pro plan loses a feature, changes a price and drops KWD, and Japan drops a country
    pro = next(p for p in data["plans"] if p["code"] == "pro")
    pro["features"] = [f for f in pro["features"] if f["feature"] != "export_pdf"]
    pro["prices"] = {"USD": 1299, "EUR": 899, "JPY": 1500}
    result = catalog_load(data=data)

    # then exactly those rows change
    assert result.updated == {"prices": 1}
    assert sorted(PlanFeature.objects.filter(plan__code="pro").values_list("feature__code", flat=True)) == [
        "api_calls",
        "projects",
    ]
    assert Price.objects.get(plan__code="pro", currency="USD").amount == 1299
    assert Price.objects.get(plan__code="pro", currency="KWD").active is False


@pytest.mark.django_db
def test_catalog_load_refuses_a_bad_file_without_writing_anything() -> None:
    # given a file whose second plan names an unknown feature
    data = {
        "features": [{"code": "export_pdf", "name": "PDF export"}],
        "plans": [
            {"code": "ok", "features": [{"feature": "export_pdf"}], "prices": {"USD": 100}},
            {"code": "bad", "features": [{"feature": "nope"}]},
        ],
    }

    # when it is loaded, then it is refused and nothing was written
    with pytest.raises(CatalogError, match="plan bad: unknown feature 'nope'"):
        catalog_load(data=data)
    assert _counts() == dict.fromkeys(_counts(), 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"plans": [{"code": "p", "prices": {"ZZZ": 100}}]}, "plan p: unknown ISO 4217 currency 'ZZZ'"),
        (
            {"plans": [{"code": "p", "prices": {"USD": 9.99}}]},
            "plan p price USD: amounts are non-negative integers",
        ),
        ({"zones": [{"code": "z"}]}, "zone z: 'currency' is required"),
        ({"zones": [{"code": "z", "currency": "USD", "rounding": "up"}]}, "zone z: rounding must be one of"),
        (["not", "a", "mapping"], "the catalog must be a mapping"),
    ],
)
def test_catalog_load_explains_what_is_wrong(data: object, message: str) -> None:
    with pytest.raises(CatalogError) as info:
        catalog_load(data=data)  # type: ignore[arg-type]
    assert info.value.message.startswith(message)


@pytest.mark.django_db
def test_a_country_cannot_join_two_zones() -> None:
    # given France in the eurozone
    catalog_load(data={"zones": [{"code": "eu", "currency": "EUR", "countries": ["FR"]}]})

    # when another zone claims France, then the load is refused
    with pytest.raises(CatalogError) as info:
        catalog_load(data={"zones": [{"code": "fr", "currency": "EUR", "countries": ["FR"]}]})
    assert info.value.message == "zone fr: countries already in another zone: {'FR': 'eu'}"
    assert list(ZoneCountry.objects.values_list("zone__code", "country")) == [("eu", "FR")]


@pytest.mark.django_db
def test_catalog_load_command_reports_and_is_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    # when the command runs twice on the demo file
    call_command("catalog_load", str(DEMO))
    call_command("catalog_load", str(DEMO))

    # then the second run reports nothing created
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "catalog loaded: created nothing, updated nothing"
    assert Plan.objects.count() == 4


@pytest.mark.django_db
def test_catalog_load_command_refuses_unreadable_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "catalog.yaml"
    bad.write_text("plans: [unclosed")
    with pytest.raises(CommandError, match="is not valid yaml"):
        call_command("catalog_load", str(bad))
