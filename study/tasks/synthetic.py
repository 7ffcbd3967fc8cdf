"""LongEmbed-style synthetic tasks (Zhu et al. 2024), regenerated offline.

passkey: every document is the same filler text with one sentence hiding one
person's passkey at a random depth; the query asks for that person's passkey.
needle: every document is a span of King James Bible text (our stand-in for
LongEmbed's essays; disjoint from all training text) with one made-up fact
inserted at a random depth; the query asks about that fact.

Per length: `num_docs` candidates, the first `num_queries` of them queried.
Document length is set in words, at most 0.75 x length (as LongEmbed), so every
backbone sees the same text whatever its tokenizer. Depths are stratified over
[0, 1) so every depth bucket is equally represented. Everything is a pure
function of the evaluation seed.
"""

from __future__ import annotations

import numpy as np

from study.sources import kjv_verses
from study.tasks.base import RetrievalTask, Split

FIRST_NAMES = (
    "Ada Alan Alice Amara Anika Arjun Astrid Bianca Boris Carmen Cedric Chloe Dara Darius Elena Elif Emil Esme "
    "Farah Felix Freya Gideon Greta Hana Hugo Ines Ingrid Ivan Jonas Juno Kai Kamala Kenji Lars Leila Lena Lucia "
    "Magnus Malik Mara Mateo Mina Nadia Nico Nora Olga Omar Oskar Paloma Priya Quentin Rafael Rania Rosa Ruben "
    "Saoirse Selma Soren Tamsin Tariq Thea Tomas Uma Valentin Vera Wanda Wiktor Xenia Yara Yusuf Zara Zoltan"
).split()
LAST_NAMES = (
    "Abara Bergstrom Castellano Dubois Eriksen Ferreira Galloway Halvorsen Ibarra Jovanovic Kowalski Lindqvist "
    "Moreau Nakamura Okafor Petrov Quintero Rasmussen Sandoval Takahashi Ueda Valdez Whitlock Xiong Yamamoto "
    "Zielinski Almeida Brennan Carvalho Delacroix Esposito Fitzgerald Gutierrez Hashemi Iversen Jansen Kaplan "
    "Lombardi Mendoza Novak Oyelaran Pellegrini Reyes Salazar Thorsen Umarov Vasquez Wojcik Yilmaz Zamora"
).split()
CITIES = (
    "Amsterdam Ankara Athens Auckland Bangkok Barcelona Beirut Bergen Bogota Bordeaux Brisbane Bruges Budapest "
    "Cairo Calgary Cape-Town Cordoba Dakar Dublin Edinburgh Florence Geneva Glasgow Granada Hanoi Havana Helsinki "
    "Istanbul Jakarta Kathmandu Krakow Kyoto Lagos Lima Lisbon Ljubljana Lyon Madrid Marrakesh Melbourne Montreal "
    "Mumbai Munich Nairobi Naples Oaxaca Osaka Oslo Palermo Porto Prague Quebec Reykjavik Riga Salzburg Santiago "
    "Seville Sofia Stockholm Tallinn Tbilisi Tokyo Toronto Trieste Tunis Valencia Vienna Vilnius Warsaw Zagreb Zurich"
).replace("-", " ").split()
ACTIVITIES = (
    "eat a sandwich in the park on a sunny day|ride a rented bicycle along the river at dawn|"
    "swim in the cold harbour before breakfast|climb the old bell tower at sunset|"
    "buy roasted chestnuts from the market stalls|listen to street musicians in the main square|"
    "take the night ferry across the bay|visit the tiny museum of antique clocks|"
    "walk through the botanical garden after rain|drink mint tea on a rooftop terrace"
).split("|")
DISHES = "soup stew pie curry risotto chili dumplings pancakes bread lasagna".split()
INGREDIENTS = (
    "smoked paprika|a spoonful of honey|toasted fennel seeds|grated lemon peel|a pinch of cinnamon|"
    "fresh tarragon|a splash of cider|black garlic|crushed juniper berries|browned butter"
).split("|")
INSTRUMENTS = "cello trumpet banjo harp accordion oboe violin drums saxophone flute".split()
BAND_WORDS_A = "Silver Velvet Midnight Paper Copper Hollow Electric Quiet Broken Golden".split()
BAND_WORDS_B = "Lanterns Foxes Tides Orchards Engines Sparrows Mirrors Rivers Ghosts Comets".split()

PASSKEY_FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
).split(". ")
PASSKEY_FILLER = [s if s.endswith(".") else s + "." for s in PASSKEY_FILLER]

PASSKEY_INSTRUCTION = "Given a question about a passkey, retrieve the document that contains it: "
NEEDLE_INSTRUCTION = "Given a question, retrieve the document that contains the answer: "


def _words(n_tokens: int) -> int:
    return max(16, int(0.75 * n_tokens))


def _stratified_depths(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.permutation(n) + rng.random(n)) / n


def _insert(units: list[str], sentence: str, depth: float, budget: int) -> tuple[str, float, tuple[int, int]]:
    """Fill `budget` words from `units` with `sentence` inserted at a unit boundary near `depth`.

    Returns the text, the needle's relative depth (word offset / other words) and its character span."""
    n_needle = len(sentence.split())
    kept, count = [], 0
    for u in units:
        w = len(u.split())
        if count + w > budget - n_needle and kept:
            break
        kept.append(u)
        count += w
    # Place the needle at the boundary whose word offset is closest to depth * count.
    offsets = np.cumsum([0] + [len(u.split()) for u in kept])
    pos = int(np.argmin(np.abs(offsets - depth * count)))
    before = " ".join(kept[:pos])
    start = len(before) + (1 if before else 0)
    text = " ".join(kept[:pos] + [sentence] + kept[pos:])
    return text, float(offsets[pos] / max(count, 1)), (start, start + len(sentence))


def _doc_ids(rng: np.random.Generator, n: int, prefix: str) -> list[str]:
    # Random ids: ranking ties are broken by id in trec_eval, so ordered ids could
    # favour the relevant document of a degenerate (constant) model.
    return [f"{prefix}{x:06x}" for x in rng.choice(16**6, size=n, replace=False)]


def _build(name, lengths, num_queries, num_docs, seed, make_doc) -> list[Split]:
    splits = []
    for length in lengths:
        rng = np.random.default_rng([seed, length, sum(map(ord, name))])
        ids = _doc_ids(rng, num_docs, f"{name[0]}{length}-")
        depths = _stratified_depths(rng, num_docs)
        facts = make_doc.facts(rng, num_docs)
        corpus, queries, qrels, depth, span = {}, {}, {}, {}, {}
        for i, (doc_id, (sentence, question)) in enumerate(zip(ids, facts)):
            text, actual_depth, needle_span = make_doc.text(rng, length, sentence, depths[i])
            corpus[doc_id] = text
            if i < num_queries:
                qid = f"q-{doc_id}"
                queries[qid], qrels[qid], depth[qid], span[qid] = question, {doc_id: 1}, actual_depth, needle_span
        splits.append(Split(length=length, queries=queries, corpus=corpus, qrels=qrels, depth=depth,
                            answer_span=span))
    return splits


class _Passkey:
    @staticmethod
    def facts(rng, n):
        people = rng.choice(len(FIRST_NAMES) * len(LAST_NAMES), size=n, replace=False)
        out = []
        for p in people:
            name = f"{FIRST_NAMES[p % len(FIRST_NAMES)]} {LAST_NAMES[p // len(FIRST_NAMES)]}"
            key = int(rng.integers(10_000, 100_000))
            out.append((
                f"{name}'s passkey is {key}. Remember it. {key} is the passkey for {name}.",
                f"What is the pass key for {name}?",
            ))
        return out

    @staticmethod
    def text(rng, length, sentence, depth):
        budget = _words(length)
        units = PASSKEY_FILLER * (budget // 15 + 2)
        return _insert(units, sentence, depth, budget)


class _Needle:
    @staticmethod
    def facts(rng, n):
        keys = [("city", c) for c in CITIES]
        keys += [("dish", (f, d)) for f in FIRST_NAMES for d in DISHES]
        keys += [("band", f"the {a} {b}") for a in BAND_WORDS_A for b in BAND_WORDS_B]
        # Draw keys so no two documents of a split share a subject.
        picks = rng.choice(len(keys), size=n, replace=False)
        out = []
        for k in picks:
            kind, key = keys[k]
            if kind == "city":
                act = ACTIVITIES[rng.integers(len(ACTIVITIES))]
                out.append((f"The best thing to do in {key} is to {act}.", f"What is the best thing to do in {key}?"))
            elif kind == "dish":
                person, dish = key
                ing = INGREDIENTS[rng.integers(len(INGREDIENTS))]
                out.append((
                    f"The secret ingredient in {person}'s {dish} is {ing}.",
                    f"What is the secret ingredient in {person}'s {dish}?",
                ))
            else:
                inst = INSTRUMENTS[rng.integers(len(INSTRUMENTS))]
                who = f"{FIRST_NAMES[rng.integers(len(FIRST_NAMES))]} {LAST_NAMES[rng.integers(len(LAST_NAMES))]}"
                out.append((f"The {inst} player of {key} is {who}.", f"Who plays the {inst} in {key}?"))
        return out

    @staticmethod
    def text(rng, length, sentence, depth):

        verses = kjv_verses()
        budget = _words(length)
        start = int(rng.integers(0, len(verses) - 1))
        units, count, i = [], 0, start
        while count < budget + 50:
            units.append(verses[i % len(verses)])
            count += len(units[-1].split())
            i += 1
        return _insert(units, sentence, depth, budget)


def passkey(lengths, num_queries, num_docs, seed) -> RetrievalTask:
    return RetrievalTask(
        name="passkey",
        query_instruction=PASSKEY_INSTRUCTION,
        splits=_build("passkey", lengths, num_queries, num_docs, seed, _Passkey),
        description="LongEmbed-style passkey retrieval over repeated filler text",
    )


def needle(lengths, num_queries, num_docs, seed) -> RetrievalTask:
    return RetrievalTask(
        name="needle",
        query_instruction=NEEDLE_INSTRUCTION,
        splits=_build("needle", lengths, num_queries, num_docs, seed, _Needle),
        description="LongEmbed-style needle retrieval: a made-up fact inside King James Bible text",
    )
