"""Writes to the catalog: load it from a file (idempotently), staff edits in the admin (audited), and
push it to Stripe."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from billing.catalog.selectors import plan_list, plan_quote, stripe_price_find, zone_for_country
from billing.events import (
    CATALOG_PLAN_CHANGED,
    CATALOG_PLAN_DELETED,
    CATALOG_PRICE_CHANGED,
    CATALOG_PRICE_DELETED,
    CATALOG_ZONE_CHANGED,
    CATALOG_ZONE_DELETED,
    plan_payload,
    price_payload,
    zone_payload,
)
from billing.metering.services import stripe_meter_ensure
from billing.models import (
    CustomerPricing,
    Feature,
    MeteredPrice,
    Plan,
    PlanFeature,
    Price,
    PricingZone,
    StripePrice,
    ZoneCountry,
    ZonePrice,
)
from billing.money import Rounding, is_stripe_currency
from billing.stripe import gateway as stripe_gateway
from payments_project.accounts.services import audit_record
from payments_project.errors import DomainError
from payments_project.events.services import Actor, event_record

logger = logging.getLogger(__name__)


class CatalogError(DomainError):
    code = "invalid_catalog"


@dataclass
class CatalogLoadResult:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, created: bool) -> None:
        bucket = self.created if created else self.updated
        bucket[kind] = bucket.get(kind, 0) + 1

    def changes(self) -> int:
        return sum(self.created.values()) + sum(self.updated.values())


def _require(item: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in item or item[key] in (None, ""):
        raise CatalogError(f"{where}: '{key}' is required")
    return item[key]


def _amount(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CatalogError(f"{where}: amounts are non-negative integers in minor units, got {value!r}")
    return value


def _currency(value: Any, where: str) -> str:
    code = str(value).upper()
    if not is_stripe_currency(code):
        raise CatalogError(f"{where}: unknown ISO 4217 currency {value!r}")
    return code


def _save(obj: Any, where: str) -> None:
    try:
        obj.full_clean(validate_unique=False, validate_constraints=False)
    except DjangoValidationError as exc:
        raise CatalogError(f"{where}: {exc.message_dict}") from exc
    obj.save()


def catalog_load(*, data: Mapping[str, Any]) -> CatalogLoadResult:
    """Make the catalog say what `data` says; running it twice leaves the same rows.

    Entries are matched by code. A listed plan's features, prices and a listed zone's countries and
    price overrides are replaced by the file's; plans and zones the file does not list are left alone.
    """
    if not isinstance(data, Mapping):
        raise CatalogError("the catalog must be a mapping with features, plans and zones")
    result = CatalogLoadResult()
    with transaction.atomic():
        for item in data.get("features") or []:
            _load_feature(item, result)
        for item in data.get("plans") or []:
            _load_plan(item, result)
        for item in data.get("zones") or []:
            _load_zone(item, result)
        # Metered prices name zones, which are loaded after the plans.
        for item in data.get("plans") or []:
            _load_metered_prices(item, result)
    return result


def _current(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except ObjectDoesNotExist:  # an unsaved row's foreign key
        return None


def _upsert(
    model: Any,
    lookup: dict[str, Any],
    values: dict[str, Any],
    kind: str,
    result: CatalogLoadResult,
    where: str,
) -> Any:
    obj = model.objects.select_for_update().filter(**lookup).first()
    created = obj is None
    if created:
        obj = model(**lookup)
    changed = created
    for name, value in values.items():
        if _current(obj, name) != value:
            setattr(obj, name, value)
            changed = True
    if changed:
        _save(obj, where)
        result.count(kind, created)
    return obj


def _load_feature(item: Mapping[str, Any], result: CatalogLoadResult) -> None:
    code = _require(item, "code", "feature")
    _upsert(
        Feature,
        {"code": code},
        {
            "name": item.get("name", code),
            "description": item.get("description", ""),
            "kind": item.get("kind", Feature.Kind.BOOLEAN),
            "unit": item.get("unit", ""),
            "meter_event_name": item.get("meter_event_name", ""),
        },
        "features",
        result,
        f"feature {code}",
    )


def _load_plan(item: Mapping[str, Any], result: CatalogLoadResult) -> None:
    code = _require(item, "code", "plan")
    where = f"plan {code}"
    changes_before = result.changes()
    plan = _upsert(
        Plan,
        {"code": code},
        {
            "name": item.get("name", code),
            "description": item.get("description", ""),
            "interval": item.get("interval", Plan.Interval.MONTH),
            "interval_count": item.get("interval_count", 1),
            "trial_days": item.get("trial_days", 0),
            "active": item.get("active", True),
            "is_family": bool(item.get("family", False)),
            "max_members": item.get("max_members"),
            "sort_order": item.get("sort_order", 0),
        },
        "plans",
        result,
        where,
    )
    features = {f.code: f for f in Feature.objects.all()}
    wanted: set[int] = set()
    for entry in item.get("features") or []:
        feature_code = _require(entry, "feature", where)
        feature = features.get(feature_code)
        if feature is None:
            raise CatalogError(f"{where}: unknown feature {feature_code!r}")
        limit = entry.get("limit")
        if limit is not None:
            limit = _amount(limit, f"{where} feature {feature_code} limit")
        pf = _upsert(
            PlanFeature,
            {"plan": plan, "feature": feature},
            {"limit": limit, "reset_period": entry.get("reset_period", PlanFeature.Reset.NEVER)},
            "plan_features",
            result,
            f"{where} feature {feature_code}",
        )
        wanted.add(pf.pk)
    features_removed, _ = PlanFeature.objects.filter(plan=plan).exclude(pk__in=wanted).delete()

    prices = item.get("prices") or {}
    changed_prices: list[Price] = []
    for currency, amount in prices.items():
        cur = _currency(currency, where)
        before = result.changes()
        price = _upsert(
            Price,
            {"plan": plan, "currency": cur},
            {"amount": _amount(amount, f"{where} price {cur}"), "active": True},
            "prices",
            result,
            f"{where} price {cur}",
        )
        if result.changes() > before:
            changed_prices.append(price)
    listed = {_currency(c, where) for c in prices}
    withdrawn = list(Price.objects.filter(plan=plan, active=True).exclude(currency__in=listed))
    Price.objects.filter(pk__in=[price.pk for price in withdrawn]).update(active=False)
    for price in withdrawn:
        price.active = False
    if result.changes() > changes_before or features_removed or withdrawn:
        catalog_plan_changed_record(plan=plan, changed_prices=[*changed_prices, *withdrawn])


def _load_metered_prices(item: Mapping[str, Any], result: CatalogLoadResult) -> None:
    """A plan feature's `metered_prices: {zone_code: minor units per unit}`; others are removed."""
    code = item["code"]
    zones = {z.code: z for z in PricingZone.objects.all()}
    for entry in item.get("features") or []:
        feature_code = entry["feature"]
        where = f"plan {code} feature {feature_code}"
        plan_feature = PlanFeature.objects.select_related("feature", "plan").get(
            plan__code=code, feature__code=feature_code
        )
        prices = entry.get("metered_prices") or {}
        if not isinstance(prices, Mapping):
            raise CatalogError(f"{where}: metered_prices is a mapping of zone code to amount")
        if prices and not plan_feature.feature.meter_event_name:
            raise CatalogError(f"{where}: metered prices need the feature's meter_event_name")
        if prices and plan_feature.plan.interval == Plan.Interval.ONE_TIME:
            raise CatalogError(f"{where}: a one-time plan cannot have metered prices")
        for zone_code, amount in prices.items():
            zone = zones.get(zone_code)
            if zone is None:
                raise CatalogError(f"{where}: unknown zone {zone_code!r}")
            unit_amount = _amount(amount, f"{where} metered price {zone_code}")
            if unit_amount < 1:
                raise CatalogError(f"{where} metered price {zone_code}: at least 1 minor unit per unit")
            _upsert(
                MeteredPrice,
                {"plan_feature": plan_feature, "zone": zone},
                {"unit_amount": unit_amount},
                "metered_prices",
                result,
                where,
            )
        MeteredPrice.objects.filter(plan_feature=plan_feature).exclude(zone__code__in=list(prices)).delete()


def _load_zone(item: Mapping[str, Any], result: CatalogLoadResult) -> None:
    code = _require(item, "code", "zone")
    where = f"zone {code}"
    changes_before = result.changes()
    try:
        multiplier = Decimal(str(item.get("multiplier", "1")))
    except InvalidOperation:
        raise CatalogError(f"{where}: multiplier must be a decimal number") from None
    rounding = item.get("rounding", Rounding.EXACT.value)
    if rounding not in {r.value for r in Rounding}:
        raise CatalogError(f"{where}: rounding must be one of {[r.value for r in Rounding]}")
    is_default = bool(item.get("default", False))
    if is_default:
        # One default zone: the unique constraint guards it, this hands the flag over.
        PricingZone.objects.filter(is_default=True).exclude(code=code).update(is_default=False)
    zone = _upsert(
        PricingZone,
        {"code": code},
        {
            "name": item.get("name", code),
            "currency": _currency(_require(item, "currency", where), where),
            "multiplier": multiplier,
            "rounding": rounding,
            "is_default": is_default,
        },
        "zones",
        result,
        where,
    )
    countries = [str(c).upper() for c in item.get("countries") or []]
    taken = dict(
        ZoneCountry.objects.filter(country__in=countries)
        .exclude(zone=zone)
        .values_list("country", "zone__code")
    )
    if taken:
        raise CatalogError(f"{where}: countries already in another zone: {taken}")
    countries_removed, _ = ZoneCountry.objects.filter(zone=zone).exclude(country__in=countries).delete()
    for country in countries:
        _upsert(ZoneCountry, {"country": country}, {"zone": zone}, "zone_countries", result, where)
    plans = {p.code: p for p in Plan.objects.all()}
    overrides = item.get("prices") or {}
    for plan_code, amount in overrides.items():
        plan = plans.get(plan_code)
        if plan is None:
            raise CatalogError(f"{where}: unknown plan {plan_code!r}")
        _upsert(
            ZonePrice,
            {"zone": zone, "plan": plan},
            {"amount": _amount(amount, f"{where} price {plan_code}")},
            "zone_prices",
            result,
            where,
        )
    overrides_removed, _ = (
        ZonePrice.objects.filter(zone=zone).exclude(plan__code__in=list(overrides)).delete()
    )
    if result.changes() > changes_before or countries_removed or overrides_removed:
        catalog_zone_changed_record(zone=zone)


def catalog_plan_changed_record(
    *, plan: Plan, changed_prices: Iterable[Price] = (), actor: Any = None
) -> None:
    """Announce a plan's new state (catalog.plan_changed) and each list price that changed
    (catalog.price_changed), in the caller's transaction: catalog_load and the admin's plan form."""
    who = Actor.of_user(actor) if actor is not None else None
    with transaction.atomic():
        for price in changed_prices:
            event_record(
                event_type=CATALOG_PRICE_CHANGED,
                aggregate_id=plan.code,
                payload=price_payload(price),
                actor=who,
            )
        event_record(
            event_type=CATALOG_PLAN_CHANGED, aggregate_id=plan.code, payload=plan_payload(plan), actor=who
        )


def catalog_zone_changed_record(*, zone: PricingZone, actor: Any = None) -> None:
    """Announce a pricing zone's new state (catalog.zone_changed): catalog_load and the admin's form."""
    with transaction.atomic():
        event_record(
            event_type=CATALOG_ZONE_CHANGED,
            aggregate_id=zone.code,
            payload=zone_payload(zone),
            actor=Actor.of_user(actor) if actor is not None else None,
        )


def catalog_deleted_record(*, row: Plan | Price | PricingZone, actor: Any = None) -> None:
    """Announce a plan, list price or pricing zone being deleted (catalog.*_deleted) with its last
    state, in the deleting transaction. Before a plan's or zone's delete: their payloads read the
    features, prices, countries and overrides that go with them."""
    who = Actor.of_user(actor) if actor is not None else None
    with transaction.atomic():
        if isinstance(row, Plan):
            event_record(
                event_type=CATALOG_PLAN_DELETED, aggregate_id=row.code, payload=plan_payload(row), actor=who
            )
        elif isinstance(row, Price):
            event_record(
                event_type=CATALOG_PRICE_DELETED,
                aggregate_id=row.plan.code,
                payload=price_payload(row),
                actor=who,
            )
        else:
            event_record(
                event_type=CATALOG_ZONE_DELETED, aggregate_id=row.code, payload=zone_payload(row), actor=who
            )


# --- Stripe ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushItem:
    plan: Plan
    currency: str
    amount: int


def catalog_push_items() -> list[PushItem]:
    """Every (plan, currency, amount) a customer can be charged: list prices and each zone's quote."""
    items: dict[tuple[int, str, int], PushItem] = {}
    for plan in plan_list(zone=None):
        for price in plan.prices.all():
            if price.active:
                items[(plan.pk, price.currency, price.amount)] = PushItem(plan, price.currency, price.amount)
    for zone in PricingZone.objects.all():
        for plan in plan_list(zone=zone):
            quote = plan_quote(plan=plan, zone=zone)
            if quote is not None:
                items[(plan.pk, quote.currency, quote.amount)] = PushItem(plan, quote.currency, quote.amount)
    return list(items.values())


def plan_product_ensure(*, plan: Plan) -> str:
    """The Stripe product of `plan`, created once (its id is derived from the plan code)."""
    product_id = plan.stripe_product_id or f"prod_plan_{plan.code}"
    gw = stripe_gateway.client()
    try:
        stripe_gateway.call(gw.v1.products.retrieve, product_id)
    except DomainError as exc:
        if exc.code != "stripe_invalid_request":
            raise
        stripe_gateway.call(
            gw.v1.products.create,
            {"id": product_id, "name": plan.name, "metadata": {"plan_code": plan.code}},
            {"idempotency_key": f"product:{plan.code}"},
        )
    if plan.stripe_product_id != product_id:
        Plan.objects.filter(pk=plan.pk).update(stripe_product_id=product_id)
        plan.stripe_product_id = product_id
    return product_id


def stripe_price_ensure(*, item: PushItem) -> StripePrice:
    existing = stripe_price_find(plan=item.plan, currency=item.currency, amount=item.amount)
    if existing is not None:
        return existing
    product_id = plan_product_ensure(plan=item.plan)
    params: dict[str, Any] = {
        "product": product_id,
        "currency": item.currency.lower(),
        "unit_amount": item.amount,
        "metadata": {"plan_code": item.plan.code},
    }
    if item.plan.interval != Plan.Interval.ONE_TIME:
        params["recurring"] = {
            "interval": item.plan.interval,
            "interval_count": item.plan.interval_count,
        }
    interval = f"{item.plan.interval}:{item.plan.interval_count}"
    key = f"price:{item.plan.code}:{item.currency}:{item.amount}:{interval}"
    price = stripe_gateway.call(stripe_gateway.client().v1.prices.create, params, {"idempotency_key": key})
    # Same idempotency key -> same Stripe price, so a concurrent push lands on the same row.
    row, _ = StripePrice.objects.get_or_create(
        plan=item.plan,
        currency=item.currency,
        amount=item.amount,
        interval=item.plan.interval,
        interval_count=item.plan.interval_count,
        defaults={"stripe_price_id": price.id},
    )
    return row


def _metered_price_key(metered_price: MeteredPrice) -> str:
    plan, feature = metered_price.plan_feature.plan, metered_price.plan_feature.feature
    return (
        f"metered-price:{plan.code}:{feature.code}:{metered_price.zone.code}:{metered_price.zone.currency}"
        f":{metered_price.unit_amount}:{plan.interval}:{plan.interval_count}"
    )


def metered_price_ensure(*, metered_price: MeteredPrice) -> bool:
    """Stripe's metered price for this plan feature and zone, on the feature's meter (created with
    the meter when missing). Prices are immutable at Stripe: a new unit amount, currency or plan
    interval is a new Stripe price. Returns whether one was created."""
    plan, feature = metered_price.plan_feature.plan, metered_price.plan_feature.feature
    where = f"metered price {plan.code}:{feature.code} in {metered_price.zone.code}"
    if not feature.meter_event_name:
        raise CatalogError(f"{where}: the feature has no meter event name")
    if plan.interval == Plan.Interval.ONE_TIME:
        raise CatalogError(f"{where}: a one-time plan has no billing period to meter")
    key = _metered_price_key(metered_price)
    if metered_price.stripe_price_id and metered_price.stripe_price_key == key:
        return False
    meter = stripe_meter_ensure(event_name=feature.meter_event_name, display_name=feature.name)
    params: dict[str, Any] = {
        "product": plan_product_ensure(plan=plan),
        "currency": metered_price.zone.currency.lower(),
        "unit_amount": metered_price.unit_amount,
        "nickname": f"{feature.name} ({plan.name}, per unit)"[:250],
        "recurring": {
            "interval": plan.interval,
            "interval_count": plan.interval_count,
            "usage_type": "metered",
            "meter": meter.stripe_meter_id,
        },
        "metadata": {
            "plan_code": plan.code,
            "feature_code": feature.code,
            "zone_code": metered_price.zone.code,
            # What a unit is, for pages that show the price ("€0.01 per call").
            "feature_name": feature.name[:500],
            "unit_label": feature.unit,
        },
    }
    # The key names the price; the digest of every parameter keeps Stripe from refusing a retry
    # after a rename or a new meter within its 24 hours ("same key, other parameters").
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    price = stripe_gateway.call(
        stripe_gateway.client().v1.prices.create, params, {"idempotency_key": f"{key}:{digest}"}
    )
    MeteredPrice.objects.filter(pk=metered_price.pk).update(stripe_price_id=price.id, stripe_price_key=key)
    metered_price.stripe_price_id, metered_price.stripe_price_key = price.id, key
    return True


def plan_metered_prices_ensure(*, plan: Plan, zone: PricingZone | None, currency: str) -> list[MeteredPrice]:
    """The metered prices a subscription to `plan` in `zone` carries next to its plan price, each
    pushed to Stripe (created, or re-created for a new amount or plan interval) so that it bills
    in `currency` on the plan's interval, as Stripe requires of one subscription's prices. Calls
    Stripe: never inside a transaction."""
    if zone is None or plan.interval == Plan.Interval.ONE_TIME or zone.currency != currency:
        return []
    rows = list(
        MeteredPrice.objects.select_related("plan_feature__plan", "plan_feature__feature", "zone")
        .filter(plan_feature__plan=plan, zone=zone)
        .exclude(plan_feature__feature__meter_event_name="")
        .order_by("plan_feature__feature__code")
    )
    for row in rows:
        metered_price_ensure(metered_price=row)
    return rows


def metered_prices_push(*, actor: Any = None) -> int:
    """Push every metered price Stripe lacks (or whose amount changed); returns how many were created.

    Rows that cannot be billed (the feature lost its meter event name, the plan became one-time)
    are left for staff (the admin form refuses them) rather than stopping the whole push. Staff's
    push (an `actor`) is audited, whatever its outcome."""
    if actor is not None:
        return _audited_push(
            actor=actor, action="metered_prices.push_to_stripe", target=MeteredPrice, push=metered_prices_push
        )
    rows = (
        MeteredPrice.objects.select_related("plan_feature__plan", "plan_feature__feature", "zone")
        .filter(plan_feature__plan__active=True)
        .exclude(plan_feature__feature__meter_event_name="")
        .exclude(plan_feature__plan__interval=Plan.Interval.ONE_TIME)
    )
    return sum(metered_price_ensure(metered_price=row) for row in rows)


def catalog_push_to_stripe(
    *,
    items: Iterable[PushItem] | None = None,
    progress: Callable[[PushItem], None] | None = None,
    actor: Any = None,
) -> int:
    """Create the products and prices Stripe lacks, metered ones included (with their meters);
    returns how many prices were created. Staff's push (an `actor`) is audited, whatever its outcome."""
    if actor is not None:
        return _audited_push(
            actor=actor,
            action="catalog.push_to_stripe",
            target=Plan,
            push=lambda: catalog_push_to_stripe(items=items, progress=progress),
        )
    created = 0
    for item in catalog_push_items() if items is None else items:
        before = stripe_price_find(plan=item.plan, currency=item.currency, amount=item.amount) is not None
        stripe_price_ensure(item=item)
        created += 0 if before else 1
        if progress is not None:
            progress(item)
    return created + metered_prices_push()


def _audited_push(*, actor: Any, action: str, target: type[models.Model], push: Callable[[], int]) -> int:
    """Run a push (it calls Stripe: outside any transaction), then audit it with its outcome: the
    whole catalog is pushed, so the entry's target is the table, not a row."""
    outcome: dict[str, Any] = {}
    try:
        outcome["created"] = push()
    except DomainError as exc:
        outcome["error"] = exc.message
        raise
    finally:
        audit_record(actor=actor, action=action, target=target, data=outcome)
    return int(outcome["created"])


# --- staff edits in the admin ---------------------------------------------------------------------

# Audit names of the catalog's rows (e.g. "plan_feature.change").
_CATALOG_NAMES: dict[type[models.Model], str] = {
    Feature: "feature",
    Plan: "plan",
    PlanFeature: "plan_feature",
    Price: "price",
    MeteredPrice: "metered_price",
    PricingZone: "pricing_zone",
    ZoneCountry: "zone_country",
    ZonePrice: "zone_price",
}


def _catalog_name(row: models.Model) -> str:
    name = _CATALOG_NAMES.get(type(row))
    if name is None:
        raise TypeError(f"{type(row).__name__} is not a catalog row")
    return name


def catalog_row_save(*, row: models.Model, actor: Any, created: bool, changed: Iterable[str] = ()) -> None:
    """Staff add or change a catalog row (feature, plan, plan feature, price, metered price, pricing
    zone, zone country, zone price), audited in the same transaction. A row saved unchanged (the
    page around a changed inline row) is not an action of its own: no entry."""
    name = _catalog_name(row)
    changed = list(changed)
    with transaction.atomic():
        row.save()
        if not created and not changed:
            return
        audit_record(
            actor=actor,
            action=f"{name}.{'add' if created else 'change'}",
            target=row,
            data={"str": str(row)[:200], "fields": sorted(changed)},
        )


def catalog_row_delete(*, row: models.Model, actor: Any) -> None:
    """Staff delete a catalog row, audited (the entry keeps its id) and, for a plan, list price or
    zone, announced (catalog.*_deleted), in the same transaction."""
    name = _catalog_name(row)
    with transaction.atomic():
        audit_record(actor=actor, action=f"{name}.delete", target=row, data={"str": str(row)[:200]})
        if isinstance(row, Plan | Price | PricingZone):
            catalog_deleted_record(row=row, actor=actor)  # announced with its last state, before it goes
        row.delete()


# --- Webhook endpoint -----------------------------------------------------------------------------


# --- the customer's pricing country (docs/pricing-trust.md) ---------------------------------------


def customer_pricing_fix(*, user: Any, country: str | None) -> CustomerPricing:
    """The customer's pricing country: the one fixed at their first purchase, else `country` (from
    the trusted proxy header, never from a request parameter) fixed now. One row per customer:
    two first purchases at once both read the row the first insert made."""
    existing = CustomerPricing.objects.filter(user_id=user.pk).first()
    if existing is not None and country and existing.source == CustomerPricing.Source.UNKNOWN:
        # Fixed while no trusted source named a country (e.g. a first attempt without the proxy's
        # header): the first trusted country fixes it, once (a conditional UPDATE).
        CustomerPricing.objects.filter(pk=existing.pk, source=CustomerPricing.Source.UNKNOWN).update(
            country=country, source=CustomerPricing.Source.PROXY_HEADER, updated_at=timezone.now()
        )
        existing.refresh_from_db()
    if existing is not None:
        return existing
    source = CustomerPricing.Source.PROXY_HEADER if country else CustomerPricing.Source.UNKNOWN
    try:
        with transaction.atomic():
            return CustomerPricing.objects.create(user=user, country=country or "", source=source)
    except IntegrityError:
        return CustomerPricing.objects.get(user_id=user.pk)


def customer_pricing_zone(*, user: Any, country: str | None) -> PricingZone | None:
    """The zone a purchase by `user` is priced in (fixing their country on the first one)."""
    return zone_for_country(country=customer_pricing_fix(user=user, country=country).country or None)


def customer_pricing_card_check(*, user_id: int, card_country: str | None) -> bool:
    """After a payment: record the card's country; a card from another country than the priced
    one is flagged for support (the admin's "card country mismatch" filter). True when flagged."""
    card_country = (card_country or "").upper()
    if len(card_country) != 2 or not card_country.isalpha():
        return False
    pricing = CustomerPricing.objects.filter(user_id=user_id).first()
    if pricing is None:
        return False
    mismatch = bool(pricing.country) and pricing.country != card_country
    # The flag stays until staff clear it (a later card from the right country does not).
    changes: dict[str, Any] = {"card_country": card_country, "updated_at": timezone.now()}
    if mismatch:
        changes["card_mismatch"] = True
    CustomerPricing.objects.filter(pk=pricing.pk).update(**changes)
    if mismatch:
        logger.warning(
            "pricing country mismatch for user %s: priced for %s, card from %s",
            user_id,
            pricing.country,
            card_country,
        )
    return mismatch


def customer_pricing_override(
    *, pricing: CustomerPricing, country: str, staff_user: Any, reason: str
) -> CustomerPricing:
    """Staff set the customer's pricing country (e.g. after checking a mismatch), audited; the
    mismatch flag is cleared, as staff have looked at it."""
    country = country.upper()
    if len(country) != 2 or not country.isascii() or not country.isalpha():
        raise DomainError("An ISO 3166-1 alpha-2 country code, e.g. FR.", code="validation_error")
    with transaction.atomic():
        locked = CustomerPricing.objects.select_for_update().get(pk=pricing.pk)
        before = locked.country
        locked.country = country
        locked.source = CustomerPricing.Source.STAFF
        locked.card_mismatch = bool(locked.card_country) and locked.card_country != country
        locked.save(update_fields=["country", "source", "card_mismatch", "updated_at"])
        audit_record(
            actor=staff_user,
            action="pricing_country_override",
            target=locked,
            subject_user_id=locked.user_id,
            reason=reason,
            data={"from": before, "to": country},
        )
    return locked
