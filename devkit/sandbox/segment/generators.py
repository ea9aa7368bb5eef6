"""Deterministic, realistic Segment message generators (same seed => byte-identical stream).

The data is deliberately awkward in the ways real Segment traffic is: reserved traits in camelCase OR
snake_case, unicode names, phones in local national formats whose country is only in ``address.country``,
``company`` as an object or a plain string, Engage audiences in both the track and the identify form, computed
traits, deletes. Prices are never integral floats, so Python and JavaScript serialise them identically.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers

Message = dict[str, Any]

DEFAULT_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ENGAGE_INTEGRATIONS = {"All": False, "Webhooks (Actions)": True}
CHURN_AUDIENCE = "churn_risk_users"
CHURN_THRESHOLD = 0.7

_FIRST = [
    "José",
    "Zoë",
    "Siobhán",
    "Łukasz",
    "Chloé",
    "Mårten",
    "Ngọc",
    "Ayşe",
    "Renée",
    "Björn",
    "Amélie",
    "Jürgen",
    "Olúwaseun",
    "María",
    "Sean",
    "Emily",
]
_LAST = [
    "Müller",
    "Ødegaard",
    "O'Brien",
    "Łukasik",
    "Nguyễn",
    "Yılmaz",
    "García-López",
    "Dubois",
    "Smith",
    "Søndergaard",
    "Van der Berg",
    "Kowalski",
    "Adeyemi",
    "Núñez",
    "Brown",
    "Tanaka",
]
_PLACES = [  # (ISO country, country as users type it, city, state, postal code, street)
    ("US", "USA", "San Francisco", "CA", "94103", "123 Market St"),
    ("US", "United States", "Austin", "TX", "78701", "500 Congress Ave"),
    ("GB", "United Kingdom", "London", "", "EC1A 1BB", "10 Aldersgate St"),
    ("DE", "Germany", "München", "BY", "80331", "Marienplatz 8"),
    ("FR", "France", "Paris", "", "75002", "12 Rue de la Paix"),
    ("BR", "BR", "São Paulo", "SP", "01310-100", "Av. Paulista, 1578"),
    ("JP", "Japan", "東京", "Tokyo", "100-0005", "丸の内1-1"),
    ("PL", "Poland", "Kraków", "", "31-042", "Rynek Główny 1"),
]
_PRODUCTS = [  # (product_id, name, category, brand, price)
    ("507f1f77bcf86cd799439011", "Monopoly: 3rd Edition", "Games", "Hasbro", 19.99),
    ("505bd76785ebb509fc183733", "Uno Card Game", "Games", "Mattel", 3.49),
    ("60a1c2e4f1b2c3d4e5f60718", "Trail Running Shoe", "Footwear", "Salomon", 129.95),
    ("60a1c2e4f1b2c3d4e5f60719", "Merino Wool Socks", "Apparel", "Smartwool", 21.5),
    ("60a1c2e4f1b2c3d4e5f6071a", "Café Crème Mug", "Kitchen", "Le Creuset", 34.75),
    ("60a1c2e4f1b2c3d4e5f6071b", "Noise-Cancelling Headphones", "Electronics", "Sony", 349.99),
]
_AUDIENCES = ["vip_customers", "first_time_shopper", "high_intent_browsers", "lapsed_90_days"]
_CUSTOM_TRAITS: list[tuple[str, Callable[[random.Random], Any]]] = [
    ("plan", lambda r: r.choice(["free", "pro", "enterprise"])),
    ("logins", lambda r: r.randint(1, 400)),
    ("favorite_color", lambda r: r.choice(["teal", "vermilion", "ochre"])),
    ("loyaltyTier", lambda r: r.choice(["bronze", "silver", "gold"])),
    ("newsletter_topics", lambda r: r.sample(["deals", "new-arrivals", "blog", "events"], 2)),
    ("lifetime_value", lambda r: round(r.uniform(10, 5000), 2) + 0.01),
]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _local_phone(rng: random.Random, region: str, serial: int) -> str:
    """A valid mobile number printed the way a local user types it (national format, no country code). The
    last six digits come from the user's serial, so two generated people never share a phone (Klaviyo would
    rightly refuse the second as a duplicate identifier)."""
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    number = example
    national = str(example.national_number)
    tails = [f"{serial % 1_000_000:06d}"] + [f"{rng.randrange(1_000_000):06d}" for _ in range(20)]
    for tail in tails:
        candidate = phonenumbers.PhoneNumber(
            country_code=example.country_code, national_number=int(national[:-6] + tail)
        )
        if phonenumbers.is_valid_number(candidate):
            number = candidate
            break
    fmt = rng.choice(
        [
            phonenumbers.PhoneNumberFormat.NATIONAL,
            phonenumbers.PhoneNumberFormat.NATIONAL,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        ]
    )
    return phonenumbers.format_number(number, fmt)


@dataclass
class User:
    """A synthetic person; ``snake`` decides how their reserved traits are spelled."""

    user_id: str
    anonymous_id: str
    first_name: str
    last_name: str
    email: str
    phone: str
    place: tuple[str, str, str, str, str, str]
    snake: bool


class SegmentGenerator:
    """Stateful generator: one RNG and one clock, so the same seed always yields the same messages."""

    def __init__(self, seed: int = 0, start: datetime = DEFAULT_START) -> None:
        self.rng = random.Random(seed)
        self.clock = start
        self._users = 0
        self._kept: dict[str, int] = {}

    # -- building blocks ------------------------------------------------------------------------------
    def _timestamp(self) -> str:
        self.clock += timedelta(seconds=self.rng.randint(1, 90), milliseconds=self.rng.randint(0, 999))
        return self.clock.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _base(self, type_: str, user: User | None, **fields: Any) -> Message:
        message: Message = {"type": type_, "messageId": _uuid(self.rng)}
        if user is not None:
            message["userId"] = user.user_id
            message["anonymousId"] = user.anonymous_id
        message.update(fields)
        message["timestamp"] = self._timestamp()
        message.setdefault("context", {"library": {"name": "analytics-node", "version": "2.1.2"}})
        return message

    def user(self) -> User:
        rng = self.rng
        self._users += 1
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        place = rng.choice(_PLACES)
        local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
        ascii_local = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode() or "user"
        email = f"{ascii_local}{self._users}@{rng.choice(['example.com', 'example.org', 'mail.example.net'])}"
        return User(
            user_id=f"user_{self._users:05d}_{rng.getrandbits(24):06x}",
            anonymous_id=_uuid(rng),
            first_name=first,
            last_name=last,
            email=email,
            phone=_local_phone(rng, place[0], self._users),
            place=place,
            snake=rng.random() < 0.4,
        )

    def _personas(self, key: str) -> dict[str, str]:
        space = f"spa_{self.rng.getrandbits(64):016x}"
        return {
            "computation_class": "audience",
            "computation_id": f"aud_{self.rng.getrandbits(64):016x}",
            "computation_key": key,
            "namespace": space,
            "space_id": space,
        }

    # -- individual message kinds ----------------------------------------------------------------------
    def identify(self, user: User, extra_traits: Mapping[str, Any] | None = None) -> Message:
        """Identify with reserved traits (camelCase or snake_case), nested address, local phone, company."""
        rng, s = self.rng, user.snake
        iso, country, city, state, postal, street = user.place
        traits: dict[str, Any] = {
            "email": user.email,
            ("first_name" if s else "firstName"): user.first_name,
            ("last_name" if s else "lastName"): user.last_name,
            "phone": user.phone,
            "address": {
                "street": street,
                "city": city,
                "state": state,
                ("postal_code" if s else "postalCode"): postal,
                "country": country,
            },
            ("created_at" if s else "createdAt"): self.clock.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "avatar": f"https://avatars.example.com/{user.user_id}.png",
            "title": rng.choice(["Head of Growth", "Engineer", "Buyer", "Student"]),
        }
        if rng.random() < 0.5:
            traits["company"] = {
                "name": rng.choice(["Initech", "Ünicorn GmbH", "Acme Corp"]),
                "id": f"co_{rng.randint(100, 999)}",
                "industry": "Technology",
                ("employee_count" if s else "employeeCount"): rng.randint(5, 5000),
                "plan": "pro",
            }
        else:
            traits["company"] = rng.choice(["Initech", "Ünicorn GmbH", "Acme Corp"])
        for key, make in rng.sample(_CUSTOM_TRAITS, 3):
            traits[key] = make(rng)
        traits.update(extra_traits or {})
        context = {
            "library": {"name": "analytics-node", "version": "2.1.2"},
            "ip": "203.0.113.7",
            "locale": f"{rng.choice(['en', 'de', 'fr', 'pt', 'ja', 'pl'])}-{iso}",
        }
        return self._base("identify", user, traits=traits, context=context)

    def _product(self, position: int) -> dict[str, Any]:
        pid, name, category, brand, price = self.rng.choice(_PRODUCTS)
        slug = name.lower().replace(" ", "-").replace(":", "")
        return {
            "product_id": pid,
            "sku": f"SKU-{pid[-6:].upper()}",
            "category": category,
            "name": name,
            "brand": brand,
            "variant": self.rng.choice(["default", "blue", "XL"]),
            "price": price,
            "quantity": self.rng.randint(1, 3),
            "position": position,
            "url": f"https://shop.example.com/p/{slug}",
            "image_url": f"https://cdn.example.com/{pid}.jpg",
        }

    def track(
        self, user: User, event: str, properties: dict[str, Any], *, with_traits: bool = True, **fields: Any
    ) -> Message:
        context: dict[str, Any] = {"library": {"name": "analytics.js", "version": "next-1.70.0"}}
        if with_traits:
            context["traits"] = {"email": user.email}
        return self._base("track", user, event=event, properties=properties, context=context, **fields)

    def ecommerce(self, user: User, refund: bool | None = None) -> list[Message]:
        """V2 funnel: Product Viewed -> Product Added -> Checkout Started -> Order Completed (-> Refunded)."""
        rng = self.rng
        products = [self._product(i + 1) for i in range(rng.randint(2, 4))]
        viewed = products[0]
        cart_id = f"cart_{rng.getrandbits(48):012x}"
        order_id = f"ord_{rng.randint(100000, 999999)}"
        subtotal = round(sum(p["price"] * p["quantity"] for p in products), 2)
        discount = round(subtotal * rng.choice([0, 0.1]), 2)
        shipping, tax = 4.99, round((subtotal - discount) * 0.08, 2)
        revenue = round(subtotal - discount, 2)
        money = {
            "currency": rng.choice(["USD", "EUR", "GBP"]),
            "revenue": revenue,
            "discount": discount,
            "shipping": shipping,
            "tax": tax,
        }
        out = [
            self.track(user, "Product Viewed", {**viewed, "currency": money["currency"], "value": viewed["price"]}),
            self.track(user, "Product Added", {"cart_id": cart_id, **viewed}),
            self.track(
                user,
                "Checkout Started",
                {
                    "order_id": order_id,
                    "affiliation": "Online Store",
                    "value": revenue,
                    "coupon": "SPRING10" if discount else "",
                    **money,
                    "products": products,
                },
            ),
            self.track(
                user,
                "Order Completed",
                {
                    "checkout_id": f"chk_{rng.getrandbits(40):010x}",
                    "order_id": order_id,
                    "affiliation": "Online Store",
                    "subtotal": subtotal,
                    "total": round(revenue + shipping + tax, 2),
                    **money,
                    "products": products,
                },
            ),
        ]
        if refund if refund is not None else rng.random() < 0.2:
            out.append(
                self.track(
                    user,
                    "Order Refunded",
                    {
                        "order_id": order_id,
                        "currency": money["currency"],
                        "total": out[-1]["properties"]["total"],
                        "products": products[:1],
                    },
                )
            )
        return out

    def audience_track(self, user: User, key: str, entered: bool) -> Message:
        """Engage track form: ``Audience Entered``/``Audience Exited`` with properties.audience_key."""
        message = self.track(
            user,
            "Audience Entered" if entered else "Audience Exited",
            {"audience_key": key, key: entered},
            integrations=dict(ENGAGE_INTEGRATIONS),
        )
        message["context"]["personas"] = self._personas(key)
        return message

    def audience_identify(self, user: User, key: str, entered: bool) -> Message:
        """Engage identify form: the boolean trait named after the audience key, computation_class audience."""
        message = self._base(
            "identify", user, traits={key: entered, "email": user.email}, integrations=dict(ENGAGE_INTEGRATIONS)
        )
        message["context"] = {"library": {"name": "unknown", "version": "unknown"}, "personas": self._personas(key)}
        return message

    def signed_up(self, user: User) -> Message:
        """Sign-up track carrying email and phone in context.traits (not a profile update by itself)."""
        message = self.track(
            user, "Signed Up", {"method": self.rng.choice(["email", "google", "apple"]), "plan": "free"}
        )
        message["context"]["traits"] = {"email": user.email, "phone": user.phone, "firstName": user.first_name}
        return message

    def churn_score(self, user: User, score: float) -> Message:
        """Engage computed trait update (identify form, computation_class trait)."""
        message = self._base(
            "identify",
            user,
            traits={"churn_risk_score": score, "email": user.email},
            integrations=dict(ENGAGE_INTEGRATIONS),
        )
        message["context"] = {
            "personas": {
                **self._personas("churn_risk_score"),
                "computation_class": "trait",
                "computation_id": f"tra_{self.rng.getrandbits(64):016x}",
            }
        }
        return message

    def page(self, user: User | None, anonymous_id: str | None = None) -> Message:
        path = self.rng.choice(["/", "/pricing", "/shoes/trail", "/blog/über-uns"])
        props = {
            "path": path,
            "referrer": "https://www.google.com/",
            "search": "",
            "title": "Shop",
            "url": f"https://shop.example.com{path}",
            "keywords": ["shop", "outdoor"],
        }
        message = self._base(
            "page",
            user,
            name=self.rng.choice(["Home", "Pricing", "Category"]),
            category="Docs",
            properties=props,
            context={
                "page": {k: props[k] for k in ("path", "referrer", "search", "title", "url")},
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
            },
        )
        if user is None:
            message["anonymousId"] = anonymous_id or _uuid(self.rng)
        return message

    def group(self, user: User) -> Message:
        return self._base(
            "group",
            user,
            groupId=f"grp_{self.rng.randint(1000, 9999)}",
            traits={
                "name": self.rng.choice(["Initech", "Ünicorn GmbH"]),
                "industry": "Retail",
                "employees": self.rng.randint(10, 900),
                "plan": "enterprise",
                "website": "https://initech.example.com",
            },
        )

    def alias(self, user: User) -> Message:
        message = self._base("alias", user, previousId=user.anonymous_id)
        del message["anonymousId"]
        return message

    def delete(self, user: User) -> Message:
        """Segment deletion request: exactly these four fields, as webhooks deliver them."""
        return {"type": "delete", "userId": user.user_id, "messageId": _uuid(self.rng), "timestamp": self._timestamp()}

    # -- scenarios (per-user sequences whose order matters) ---------------------------------------------
    def scenario(self, name: str, first: bool = False) -> list[Message]:
        user = self.user()
        key = self.rng.choice(_AUDIENCES)
        if name == "identify":
            return [self.identify(user)]
        if name == "ecommerce":
            return [self.identify(user), *self.ecommerce(user, refund=True if first else None)]
        if name in ("audience_track", "audience_identify"):
            make = self.audience_track if name == "audience_track" else self.audience_identify
            self._kept[name] = self._kept.get(name, 0) + 1
            if self._kept[name] % 2 == 0:  # every other member stays, so lists end non-empty
                return [self.identify(user), make(user, key, True)]
            return [self.identify(user), make(user, key, True), make(user, key, False)]
        if name == "signup":
            anon = self.page(None, user.anonymous_id)
            return [anon, self.identify(user), self.signed_up(user)]
        if name == "churn":
            low, high, back = (
                round(self.rng.uniform(0.3, 0.65), 2),
                round(self.rng.uniform(0.72, 0.95), 2),
                round(self.rng.uniform(0.4, 0.69), 2),
            )
            form = self.audience_track if self.rng.random() < 0.5 else self.audience_identify
            entered = [
                self.identify(user),
                self.churn_score(user, low),
                self.churn_score(user, high),
                form(user, CHURN_AUDIENCE, True),
            ]
            self._kept[name] = self._kept.get(name, 0) + 1
            if self._kept[name] % 2 == 0:  # every other user stays at risk, so the win-back list ends non-empty
                return entered
            return [*entered, self.churn_score(user, back), form(user, CHURN_AUDIENCE, False)]
        if name == "alias":
            return [self.page(None, user.anonymous_id), self.alias(user), self.identify(user)]
        if name == "page":
            return [self.page(user)]
        if name == "group":
            return [self.identify(user), self.group(user)]
        if name == "delete":
            return [self.identify(user), self.delete(user)]
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(DEFAULT_MIX)}")


#: Relative weights of the scenarios in a generated stream.
DEFAULT_MIX: dict[str, float] = {
    "identify": 3,
    "ecommerce": 3,
    "audience_track": 1.5,
    "audience_identify": 1.5,
    "signup": 2,
    "churn": 1,
    "alias": 0.5,
    "page": 1,
    "group": 0.5,
    "delete": 0.5,
}


def generate_stream(
    count: int, seed: int = 0, mix: Mapping[str, float] | None = None, start: datetime = DEFAULT_START
) -> list[Message]:
    """``count`` messages mixing every scenario (each at least once when ``count`` allows, ~35 messages).

    Scenarios are interleaved across users but each user's order holds (identify before their tracks, audience
    enter before exit, delete last); timestamps increase along the stream. Only the last scenario may be cut.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    weights = dict(mix) if mix is not None else dict(DEFAULT_MIX)
    unknown = set(weights) - set(DEFAULT_MIX)
    if unknown or not any(w > 0 for w in weights.values()):
        raise ValueError(f"mix needs positive weights for known scenarios: {', '.join(DEFAULT_MIX)}")
    gen = SegmentGenerator(seed, start)
    names = [n for n, w in weights.items() if w > 0]
    sequences: list[list[Message]] = []
    total = 0
    pending = list(names)
    while total < count:
        first = bool(pending)
        name = pending.pop(0) if pending else gen.rng.choices(names, [weights[n] for n in names])[0]
        seq = gen.scenario(name, first=first)
        seq = seq[: count - total]
        sequences.append(seq)
        total += len(seq)
    stream: list[Message] = []
    active = [s for s in sequences if s]
    while active:
        seq = gen.rng.choices(active, [len(s) for s in active])[0]
        stream.append(seq.pop(0))
        active = [s for s in active if s]
    clock = start
    for message in stream:  # re-stamp in stream order so time order == stream order
        clock += timedelta(seconds=gen.rng.randint(1, 30), milliseconds=gen.rng.randint(0, 999))
        message["timestamp"] = clock.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return stream
