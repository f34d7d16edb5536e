"""Nexmark events: persons, auctions and bids, generated vectorized with numpy.

Event ``e`` (0, 1, 2, ...) is a person when ``e % 50 == 0``, an auction when ``e % 50`` is 1, 2
or 3, and a bid otherwise (the Nexmark proportions 1 : 3 : 46, i.e. 2 % / 6 % / 92 %). Event
time runs at ``rate`` events per second of event time from ``BASE_TIME`` (events in order, as the
standard generator emits them; queries use watermarks ``dateTime − 4 s``). Ids and references
follow the standard generator's rules in spirit: a person or auction id is its number among
persons or auctions (from 1000); an auction's seller is one of the 100 most recent persons; a
bid's auction is the newest auction half the time (hot), else one of the 100 most recent; its
bidder is one of the 100 most recent persons; categories are 10..14; auctions expire 2–20 s
after they open. Seeded: the same arguments give the same events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

BASE_TIME = 1_436_918_400_000  # 2015-07-15, the Nexmark base time
FIRST_ID = 1000
STATES = ["AZ", "CA", "ID", "OR", "WA", "WY"]
CITIES = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
]
FIRST_NAMES = [
    "Peter",
    "Paul",
    "Luke",
    "John",
    "Saul",
    "Vicky",
    "Kate",
    "Julie",
    "Sarah",
    "Deiter",
    "Walter",
]
LAST_NAMES = [
    "Shultz",
    "Abrams",
    "Spencer",
    "White",
    "Bartels",
    "Walton",
    "Smith",
    "Jones",
    "Noris",
]
CHANNELS = ["Google", "Facebook", "Baidu", "Apple"]


@dataclass
class Events:
    """The events of one run, by kind, each table in event order (``dateTime`` ascending)."""

    persons: pa.Table
    auctions: pa.Table
    bids: pa.Table

    @property
    def total(self) -> int:
        return self.persons.num_rows + self.auctions.num_rows + self.bids.num_rows


def _pick(rng: np.random.Generator, values: list[str], n: int) -> pa.Array:
    return pa.array(values).take(pa.array(rng.integers(0, len(values), n)))


def generate(n: int, rate: int = 10_000, seed: int = 1) -> Events:
    rng = np.random.default_rng(seed)
    e = np.arange(n, dtype=np.int64)
    r = e % 50
    time = BASE_TIME + e * 1000 // rate
    is_person, is_auction = r == 0, (r >= 1) & (r <= 3)
    is_bid = ~(is_person | is_auction)
    # persons and auctions that exist before each event (standard generator: ids grow)
    persons_before = np.cumsum(is_person) - is_person
    auctions_before = np.cumsum(is_auction) - is_auction

    p_time = time[is_person]
    np_ = len(p_time)
    first = _pick(rng, FIRST_NAMES, np_).to_pylist()
    last = _pick(rng, LAST_NAMES, np_).to_pylist()
    persons = pa.table(
        {
            "id": FIRST_ID + np.arange(np_, dtype=np.int64),
            "name": [f"{a} {b}" for a, b in zip(first, last)],
            "emailAddress": [f"{a.lower()}@{b.lower()}.com" for a, b in zip(first, last)],
            "creditCard": [
                f"{x:04d} {x * 7 % 10000:04d}" for x in rng.integers(0, 10000, np_).tolist()
            ],
            "city": _pick(rng, CITIES, np_),
            "state": _pick(rng, STATES, np_),
            "dateTime": p_time,
        }
    )

    a_time = time[is_auction]
    na = len(a_time)
    known_persons = np.maximum(persons_before[is_auction], 1)
    seller = FIRST_ID + known_persons - 1 - rng.integers(0, 100, na) % known_persons
    initial = rng.integers(1, 1000, na)
    auctions = pa.table(
        {
            "id": FIRST_ID + np.arange(na, dtype=np.int64),
            "itemName": _pick(rng, [f"item-{i}" for i in range(1000)], na),
            "initialBid": initial,
            "reserve": initial + rng.integers(0, 1000, na),
            "dateTime": a_time,
            "expires": a_time + rng.integers(2_000, 20_000, na),
            "seller": seller,
            "category": 10 + rng.integers(0, 5, na),
        }
    )

    b_time = time[is_bid]
    nb = len(b_time)
    known_auctions = np.maximum(auctions_before[is_bid], 1)
    hot = rng.integers(0, 2, nb) == 0
    recent = known_auctions - 1 - rng.integers(0, 100, nb) % known_auctions
    auction = FIRST_ID + np.where(hot, known_auctions - 1, recent)
    known_bidders = np.maximum(persons_before[is_bid], 1)
    bidder = FIRST_ID + known_bidders - 1 - rng.integers(0, 100, nb) % known_bidders
    bids = pa.table(
        {
            "auction": auction,
            "bidder": bidder,
            "price": np.round(np.exp(rng.uniform(0, 10, nb)) * 10).astype(np.int64) + 1,
            "channel": _pick(rng, CHANNELS, nb),
            "url": _pick(
                rng, [f"https://www.nexmark.com/item.htm?query={i}" for i in range(997)], nb
            ),
            "dateTime": b_time,
        }
    )
    return Events(persons, auctions, bids)
