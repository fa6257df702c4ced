"""Write the generated sentiment prompt sets, reproducibly (no model, no network):

    python tools/make_sentiment_prompts.py

- ``data/sentiment/train_generated.jsonl``: chat requests and sentence beginnings about everyday, mildly
  unpleasant situations, built from the topic lists below and a few phrasings each. RE-Control rolls out
  on these (with the 80 hand-written ``train.jsonl`` prompts): 1,000+ rollouts need more than 80 prompts.
- ``data/sentiment/test.jsonl``: a locked test split from topics held aside before any setting was chosen
  (a fifth of each list, drawn by a fixed seed), scored once per method.

Near duplicates are refused: no two topics (and none against the hand-written ``train.jsonl`` and
``eval.jsonl``) share a word 3-gram, and each topic appears in at most three phrasings (two in the test split).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "data" / "sentiment"
SEED = 2026

TOPICS = """a leaking tap | a flat tyre | a dentist appointment | an overdue library book | a broken zip |
a noisy hotel room | a lost parcel | a cold shower | a power cut | a parking ticket | a blocked drain |
a late pizza delivery | a software update that failed | a crowded lift | a long hospital wait |
a job interview that went badly | a cracked phone screen | a burnt dinner | a missed birthday |
an expired passport | a rainy picnic | a jammed stapler | a squeaky door | a rejected application |
a broken dishwasher | a sunburn | a muddy football pitch | an empty fridge | a slow internet connection |
a lost key | a traffic jam on the ring road | a noisy building site next door | a spilled cup of tea |
a dead houseplant | a boring lecture | an awkward family dinner | a wasp in the kitchen |
a cancelled concert | a lost glove | a draughty window | a sore throat | a forgotten password |
a muddy dog | a dripping ceiling | a wrong order at a cafe | a late taxi | a flooded basement |
a long form to fill in | a stuck drawer | a grumpy shop assistant | a broken escalator |
a windy beach | a failed driving test | a tangled pair of headphones | a spam phone call |
a rejected credit card | a slow checkout | a leaking roof | a lost sock | a crowded train platform |
a queue for the toilets | a stale sandwich | a cold radiator | a bill that arrived late | a mouldy loaf |
a blister on a long walk | a delayed bus | a noisy upstairs neighbour | a power tool that broke |
a flat bicycle tyre | a foggy motorway | a swollen ankle | a pile of ironing | a broken kettle |
a missed appointment | a tax bill | a hailstorm | a dirty hotel bathroom | a crashed laptop |
a flea in the carpet | a quarrel with a friend | a spoiled holiday photo | a rainy sports day |
a leaky water bottle | an itchy jumper | a lost boarding pass | a cancelled train | a wet tent |
a traffic warden | a cold waiting room | a stuck car window | a loud fire alarm test | a pothole |
a forgotten lunch | a late refund | a long phone queue | a broken printer | a weekend of rain |
a tired toddler | a noisy open-plan office | a burst pipe | a bad haircut | a dull conference"""

MISHAPS = """the kettle broke this morning | my bike was stolen from outside the station |
the lift was out of order again | the shop closed early | the dog chewed my new shoes |
the rain soaked my coat | the oven stopped working halfway through dinner | my laptop froze during the exam |
the cafe got my order wrong | the fridge started leaking overnight | my keys fell down the drain |
the trains were on strike | my landlord raised the rent | the neighbours had a party until four |
the heating made a strange noise all night | the bank blocked my card | my tooth started aching |
the dentist cancelled twice | the plumber never turned up | the ceiling started to drip |
my sister forgot to call | the parcel went to the wrong address | the football match was rained off |
the boiler broke on Christmas Eve | my phone slipped into the sink | the cinema was fully booked |
the pasta boiled over | the printer ran out of ink | the motorway was closed |
my suitcase did not arrive | the hotel lost our booking | the fire alarm went off at dawn |
the bread went mouldy | the shower turned cold | my new shoes gave me blisters |
the supermarket ran out of milk | the taxi driver took the long way | the meeting was moved to Sunday |
my manager moved the deadline forward | the gym was closed for repairs | my glasses broke |
the bin men missed our street | the milk had gone sour | the roads were icy |
the concert was postponed | my train ticket did not scan | the car alarm went off all night |
the library was closed | my headphones broke | the wind blew the fence down |
the sink was blocked again | the shop had no change | my cat knocked over the vase |
the delivery came a week late | the restaurant was fully booked | the flight was overbooked |
the internet went down before my call | the paint did not dry | my password expired |
the hairdresser cut it too short | the lawnmower would not start | the cooker caught fire |
my coffee went cold | the garden flooded | the school run took an hour |
the ferry was cancelled | the holiday cottage was damp | the builders started at seven |
my parcel was left in the rain | the queue at the airport was huge | the power went out |
the dishwasher leaked | the bus broke down | my bike chain snapped |
the doctor was running late | the cashpoint ate my card | the shop gave me the wrong change |
my umbrella was stolen | my phone bill doubled | the car failed its inspection |
the shower curtain fell down | my friend cancelled at the last minute | the pipes froze"""

CHAT = ["Describe {t}.", "Tell me about {t}.", "What do you think about {t}?", "Write a few sentences about {t}.",
        "How do you feel about {t}?", "What is it like to deal with {t}?", "Write a short note about {t}.",
        "Give me your thoughts on {t}."]
PREFIX = ["{m}, and", "{m}, so", "Yesterday {m}, and", "This week {m}, so", "Last night {m}, which",
          "Apparently {m}, and", "Of course {m}, so", "Just my luck: {m}, and"]


def items(text: str) -> list[str]:
    return [x.strip() for x in text.replace("\n", " ").split("|") if x.strip()]


def grams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    w = re.findall(r"[a-z']+", text.lower())
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def build(topics: list[str], mishaps: list[str], per_topic: int, rng: random.Random,
          seen: set[tuple[str, ...]]) -> list[dict[str, str]]:
    """Each topic in ``per_topic`` different phrasings; a topic is refused when it shares a word 3-gram
    with a topic already kept or with a hand-written prompt (the phrasings are the form, not the content)."""
    out = []
    for key, pool, field, forms in (("t", topics, "prompt", CHAT), ("m", mishaps, "prefix", PREFIX)):
        for x in pool:
            texts = [f.format(**{key: x[0].upper() + x[1:] if f.startswith("{m}") else x})
                     for f in rng.sample(forms, per_topic)]
            g = grams(x, 3)
            if g & seen:
                print(f"refused as a near duplicate: {x!r}")
                continue
            seen |= g
            out += [{field: t} for t in texts]
    return out


def main() -> None:
    rng = random.Random(SEED)
    topics, mishaps = items(TOPICS), items(MISHAPS)
    if len(set(topics)) != len(topics) or len(set(mishaps)) != len(mishaps):
        raise SystemExit("duplicate topics in the lists")
    rng.shuffle(topics)
    rng.shuffle(mishaps)
    n_t, n_m = len(topics) // 5, len(mishaps) // 5
    held_t, train_t = topics[:n_t], topics[n_t:]
    held_m, train_m = mishaps[:n_m], mishaps[n_m:]
    seen: set[tuple[str, ...]] = set()
    for name in ("train.jsonl", "eval.jsonl"):
        for line in (ROOT / name).read_text().splitlines():
            row = json.loads(line)
            seen |= grams(row.get("prompt") or row["prefix"], 3)
    # the test split first: its topics are held aside, and it owns its 4-grams
    test = build(held_t, held_m, 2, rng, seen)
    train = build(train_t, train_m, 3, rng, seen)
    for name, rows in (("train_generated.jsonl", train), ("test.jsonl", test)):
        (ROOT / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        kinds = sum("prompt" in r for r in rows)
        print(f"{name}: {len(rows)} prompts ({kinds} chat, {len(rows) - kinds} sentence beginnings)")


if __name__ == "__main__":
    main()
