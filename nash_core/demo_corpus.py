"""An offline, generated dialogue-summarisation corpus for the demo (no downloaded text).

Why generated: this project must run end to end with no network, and real text is not learnable
from scratch on a 2-core CPU in minutes. These dialogues behave like SAMSum in miniature: people
arrange, move or cancel dinners, meetings, pick-ups, trips and moves over 4-8 chat turns
("Name: utterance" lines), small talk gets in the way, and half of the time the other person
counter-proposes a time. The summary (one or two sentences) has to gather facts spread over the
turns: who, what, where, when, and what changed. A model that only learns the summary template
scores about ROUGE-L 0.64; getting the facts right is what the teacher learns (and what pruning
must keep).

Everything is drawn from word lists below (about 500 distinct words, so the demo's word-level
tokenizer fits) with one ``random.Random`` per dialogue, seeded by ``(seed, index)``: the corpus
is identical on every machine and ``generate_corpus(n, s)`` is a prefix of
``generate_corpus(n + m, s)``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

NAMES = (
    "Anna Ben Carla David Emma Felix Grace Hugo Iris Jack Kate Leo Mia Nora Oscar Paula Quinn "
    "Rosa Sam Tara Umar Vera Will Zoe Adam Bella Chris Dana Eli Fiona Greg Hana Ivan Julia Karl "
    "Lina Marco Nina Omar Priya Raj Sara Tom Ulla Victor Wendy Yara Zack Amir Beth Cole Dora Erik "
    "Freya Gina Henry Ines Jonas Kim Lucas"
).split()
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TIMES = (
    "7 am",
    "8 am",
    "9 am",
    "10 am",
    "11 am",
    "noon",
    "1 pm",
    "2 pm",
    "3 pm",
    "4 pm",
    "5 pm",
    "6 pm",
    "7 pm",
    "8 pm",
    "9 pm",
)
STREETS = (
    "oak",
    "elm",
    "pine",
    "river",
    "hill",
    "mill",
    "church",
    "king",
    "queen",
    "market",
    "garden",
    "north",
    "station",
    "bridge",
    "lake",
    "rose",
)
MEET_PLACES = (
    "the harbor cafe",
    "the library",
    "the old bakery",
    "the park gate",
    "the green pub",
    "the museum",
    "the corner diner",
    "the town square",
    "the pizza place",
    "the tea house",
    "the book shop",
    "the city hall",
    "the sushi bar",
    "the food market",
    "the river bridge",
    "the hotel bar",
    "the music hall",
    "the main gate",
    "the little bistro",
    "the fountain",
)
WORK_PLACES = (
    "the office",
    "the meeting room",
    "the second floor",
    "the big room",
    "the lab",
    "the studio",
    "the school",
    "the town hall",
)
SPORT_PLACES = (
    "the sports club",
    "the gym",
    "the city pool",
    "the tennis court",
    "the park",
    "the climbing hall",
)
CITIES = (
    "paris",
    "rome",
    "berlin",
    "oslo",
    "vienna",
    "prague",
    "madrid",
    "dublin",
    "lyon",
    "porto",
    "milan",
    "zurich",
    "munich",
    "brussels",
    "krakow",
    "lisbon",
)
TOPICS = (
    "budget",
    "new website",
    "sales report",
    "school trip",
    "summer party",
    "project plan",
    "team lunch",
    "new app",
    "annual review",
    "client visit",
)
OBJECTS = (
    "sofa",
    "desk",
    "fridge",
    "bike",
    "lamp",
    "bookshelf",
    "printer",
    "washing machine",
    "guitar",
    "laptop",
    "mirror",
    "rug",
)
PICKUP_PLACES = (
    "the post office",
    "the repair shop",
    "the furniture store",
    "the neighbor",
    "the bike shop",
    "the parcel locker",
    "the warehouse",
)
SUBJECTS = ("math", "history", "physics", "biology", "french", "chemistry")
SPORTS = ("tennis", "squash", "football", "badminton", "basketball")
THINGS_TO_BRING = (
    "the wine",
    "a cake",
    "some snacks",
    "the tickets",
    "some boxes",
    "the car",
    "a salad",
    "the music",
    "some tape",
    "sandwiches",
)

# Reasons to cancel or move: (what the speaker says, what the summary says about them).
REASONS = (
    ("my car broke down", "{a}'s car broke down"),
    ("I have the flu", "{a} has the flu"),
    ("my boss needs me at work", "{a} has to work"),
    ("my sister is visiting", "{a}'s sister is visiting"),
    ("I have a doctor's appointment", "{a} has a doctor's appointment"),
    ("my train was cancelled", "{a}'s train was cancelled"),
    ("my son is sick", "{a}'s son is sick"),
    ("I have to finish a report", "{a} has to finish a report"),
    ("my flight was moved", "{a}'s flight was moved"),
    ("the plumber is coming", "the plumber is coming to {a}'s flat"),
)

SMALL_TALK = (
    ("did you see the game last night?", "yes, what a finish!"),
    ("how is your mum doing?", "much better, thanks for asking."),
    ("it is so cold today.", "I know, I need a new coat."),
    ("I finally finished that book.", "nice, did you like the end?"),
    ("have you talked to {c} lately?", "yes, {c} says hi."),
    ("{c} got a new dog!", "really? we should visit soon."),
    ("how was your weekend?", "quiet, I mostly slept."),
    ("my new phone keeps crashing.", "ugh, that is the worst."),
    ("did you try the new cafe near work?", "not yet, is it good?"),
    ("I started running again.", "good for you!"),
    ("the traffic was terrible this morning.", "same here, I was late too."),
    ("{c} is moving to {city} next month.", "wow, I did not know that."),
    ("are you watching the new series?", "yes, but no spoilers please!"),
    ("I lost my keys again.", "classic, check your coat."),
)
GREETINGS = (
    ("hi {b}!", "hi {a}!"),
    ("hey {b}, how are you?", "good, you?"),
    ("hello {b}, got a minute?", "sure, go ahead."),
    ("hi, quick question.", "yes?"),
    ("morning {b}!", "morning! what's up?"),
)
CLOSINGS = (
    ("see you then!", "see you!"),
    ("great, thanks!", "no problem."),
    ("perfect.", "bye!"),
    ("good, it's a plan.", "yes, see you."),
    ("thanks a lot!", "any time."),
)


@dataclass(frozen=True)
class Activity:
    """One thing people can plan; ``plan`` is the summary's clause, ``invite`` the chat's."""

    invite: str  # "have dinner" -- follows "can you ..." / "shall we ..."
    noun: str  # "dinner"      -- follows "I have to cancel ..."
    plan: str  # "{a} and {b} will have dinner" -- the summary's subject and verb
    place: str  # "the harbor cafe"
    where: str  # "at the harbor cafe" -- the place as the summary puts it
    place_line: str  # how the place comes up in the chat
    social: bool  # both go (dinner) or one helps the other (pick-up, move)


def _activity(r: random.Random) -> Activity:
    kind = r.choice(
        (
            "dinner",
            "lunch",
            "coffee",
            "meeting",
            "movie",
            "sport",
            "study",
            "trip",
            "move",
            "pickup",
            "party",
        )
    )
    meet = r.choice(MEET_PLACES)
    if kind in ("dinner", "lunch", "coffee"):
        verb = {"dinner": "have dinner", "lunch": "have lunch", "coffee": "meet for coffee"}[kind]
        line = r.choice(("let's go to {p}.", "I booked a table at {p}.", "how about {p}?"))
        return Activity(
            verb, kind, "{a} and {b} will " + verb, meet, f"at {meet}", line.format(p=meet), True
        )
    if kind == "meeting":
        topic, room = r.choice(TOPICS), r.choice(WORK_PLACES)
        return Activity(
            f"meet about the {topic}",
            f"the {topic} meeting",
            "{a} and {b} will meet about the " + topic,
            room,
            f"in {room}",
            f"we can use {room}.",
            True,
        )
    if kind == "movie":
        return Activity(
            "see a movie",
            "the movie",
            "{a} and {b} will see a movie",
            meet,
            f"after meeting at {meet}",
            f"let's meet at {meet} first.",
            True,
        )
    if kind == "sport":
        sport, club = r.choice(SPORTS), r.choice(SPORT_PLACES)
        return Activity(
            f"play {sport}",
            sport,
            f"{{a}} and {{b}} will play {sport}",
            club,
            f"at {club}",
            f"I can book {club}.",
            True,
        )
    if kind == "study":
        subject = r.choice(SUBJECTS)
        return Activity(
            f"study for the {subject} exam",
            f"the {subject} study session",
            f"{{a}} and {{b}} will study for the {subject} exam",
            meet,
            f"at {meet}",
            f"{meet} is quiet enough.",
            True,
        )
    if kind == "trip":
        city = r.choice(CITIES)
        station = r.choice(("the central station", "the airport", "the bus station"))
        return Activity(
            f"go to {city}",
            f"the trip to {city}",
            f"{{a}} and {{b}} will go to {city}",
            station,
            f"from {station}",
            f"we leave from {station}.",
            True,
        )
    if kind == "move":
        street = f"{r.choice(STREETS)} street"
        return Activity(
            "help me move",
            "the move",
            "{b} will help {a} move",
            street,
            f"to {street}",
            f"the new flat is on {street}.",
            False,
        )
    if kind == "pickup":
        obj, shop = r.choice(OBJECTS), r.choice(PICKUP_PLACES)
        return Activity(
            f"pick up my {obj}",
            f"the {obj} pick up",
            f"{{b}} will pick up {{a}}'s {obj}",
            shop,
            f"from {shop}",
            f"it is waiting at {shop}.",
            False,
        )
    return Activity(
        "come to my birthday party",
        "my party",
        "{b} will come to {a}'s birthday party",
        meet,
        f"at {meet}",
        f"it's at {meet}.",
        False,
    )


def _when(day: str, time: str) -> str:
    return f"on {day} at {time}"


def _other(r: random.Random, options: tuple[str, ...], not_this: str) -> str:
    return r.choice([o for o in options if o != not_this])


def _counter(r: random.Random, day: str, time: str):
    """A counter-proposal: a new (day, time), B's turn, A's acceptance, and what changed."""
    if r.random() < 0.5:
        new_day, new_time = _other(r, DAYS, day), r.choice(TIMES)
        say = r.choice(
            (
                "{d} does not work for me. what about {nd} at {nt}?",
                "sorry, I'm busy on {d}. {nd} at {nt} instead?",
                "I can't do {d}. could we do {nd}, {nt}?",
            )
        )
        changed = f"{{b}} could not make it on {day}."
    else:
        new_day, new_time = day, _other(r, TIMES, time)
        say = r.choice(
            (
                "{t} is too early for me, can we do {nt}?",
                "I'm stuck until then. {nt} maybe?",
                "could we make it {nt} instead of {t}?",
            )
        )
        changed = f"{{b}} could not make it at {time}."
    accept = r.choice(("{nd} at {nt} is fine.", "sure, that works.", "ok, {nt} it is.", "deal."))
    fmt = dict(d=day, t=time, nd=new_day, nt=new_time)
    return new_day, new_time, say.format(**fmt), accept.format(**fmt), changed


def _arrange(r: random.Random, act: Activity):
    """A proposes, B accepts or counter-proposes; the place comes up along the way."""
    day, time = r.choice(DAYS), r.choice(TIMES)
    asks = (
        (
            "would you like to {v} {w}?",
            "are you free {w}? we could {v}.",
            "how about we {v} {w}?",
            "shall we {v} {w}?",
        )
        if act.social
        else (
            "could you {v} {w}?",
            "can you {v} {w}?",
            "would you {v} {w}?",
            "are you free {w}? could you {v}?",
        )
    )
    ask = r.choice(asks)
    turns = [("a", ask.format(v=act.invite, w=_when(day, time)))]
    changed = None
    if r.random() < 0.5:
        day, time, say, accept, changed = _counter(r, day, time)
        turns += [("b", say), ("a", accept)]
    else:
        turns.append(
            (
                "b",
                r.choice(
                    (
                        "sure, sounds good.",
                        "yes, I'd love to.",
                        "ok, why not.",
                        "perfect, count me in.",
                    )
                ),
            )
        )
    if r.random() < 0.5:
        turns += [("b", "where?"), ("a", act.place_line)]
    else:
        turns.append(("a", act.place_line))
    summary = [f"{act.plan} {act.where} {_when(day, time)}."]
    if changed:
        summary.append(changed)
    return turns, summary


def _move(r: random.Random, act: Activity):
    """A moves an agreed plan to a new time; B may counter-propose."""
    day, time = r.choice(DAYS), r.choice(TIMES)
    new_day, new_time = _other(r, DAYS, day), r.choice(TIMES)
    said, _ = r.choice(REASONS)
    turns = [
        (
            "a",
            r.choice(
                ("about {n} {w}...", "it's about {n} {w}.", "quick thing about {n} {w}.")
            ).format(n=act.noun, w=_when(day, time)),
        ),
        ("b", r.choice(("yes?", "what's up?", "is everything ok?"))),
        ("a", f"{said}, can we move it to {new_day} at {new_time}?"),
    ]
    if r.random() < 0.5:
        new_day, new_time, say, accept, _ = _counter(r, new_day, new_time)
        turns += [("b", say), ("a", accept)]
    else:
        turns.append(("b", r.choice(("no problem.", "sure, that works.", "fine with me."))))
    turns += [
        ("b", r.choice(("same place?", "still at the same place?"))),
        ("a", f"yes, {act.place}."),
    ]
    plan = act.plan.replace(" will ", " will now ", 1)
    return turns, [f"{plan} {act.where} {_when(new_day, new_time)} instead of {day}."]


def _cancel(r: random.Random, act: Activity):
    """A cancels with a reason; half of the time B proposes a new time."""
    day = r.choice(DAYS)
    said, why = r.choice(REASONS)
    turns = [
        (
            "a",
            r.choice(
                (
                    "I'm so sorry, I have to cancel {n} on {d}.",
                    "bad news, I can't make {n} on {d}.",
                    "I need to cancel {n} on {d}, sorry.",
                )
            ).format(n=act.noun, d=day),
        ),
        ("b", r.choice(("oh no, what happened?", "oh, is everything ok?", "why?"))),
        ("a", said + "."),
    ]
    summary = [f"{{a}} cancels {act.noun} on {day} with {{b}} because {why}."]
    if r.random() < 0.5:
        new_day, new_time = _other(r, DAYS, day), r.choice(TIMES)
        turns += [
            ("b", f"no worries. what about {new_day} at {new_time}?"),
            ("a", r.choice(("yes, that works.", "perfect, thank you.", "deal."))),
        ]
        summary.append(f"{act.plan} {_when(new_day, new_time)} instead.")
    else:
        turns.append(
            (
                "b",
                r.choice(
                    (
                        "no worries, another time.",
                        "ok, get well soon.",
                        "fine, let's talk next week.",
                    )
                ),
            )
        )
    if not act.social:  # "my party" -> summary speaks of A's party
        summary[0] = summary[0].replace("my party", "{a}'s party")
    return turns, summary


def _dialogue(r: random.Random) -> dict:
    a, b, c = r.sample(NAMES, 3)
    act = _activity(r)
    kind = r.choices(("arrange", "move", "cancel"), weights=(2, 1, 1))[0]
    turns, summary = {"arrange": _arrange, "move": _move, "cancel": _cancel}[kind](r, act)

    if kind == "arrange" and act.social and len(summary) == 1 and r.random() < 0.5:
        who = r.choice(("a", "b"))
        thing = r.choice(THINGS_TO_BRING)
        turns.append((who, f"I'll bring {thing}."))
        summary.append(f"{{{who}}} will bring {thing}.")
    blocks = [turns]
    if len(turns) + 2 <= 8 and r.random() < 0.4:
        hello, reply = r.choice(GREETINGS)
        blocks.insert(0, [("a", hello), ("b", reply)])
    length = sum(map(len, blocks))
    # small talk pads short exchanges to 4-6 turns (up to 8 when the plan itself is long): every
    # token costs teacher training time on 2 CPU cores (mean source 55 words, was 60 when
    # padding went to 8 turns), and one or two small-talk pairs are distraction enough
    target = r.randint(max(4, length), max(6, length))
    closing = r.choice(CLOSINGS)
    if length + 2 <= target and r.random() < 0.5:
        blocks.append([("a", closing[0]), ("b", closing[1])])
        length += 2
    talk = list(SMALL_TALK)
    r.shuffle(talk)
    while length + 2 <= target and talk:
        first, second = talk.pop()
        speakers = ("a", "b") if r.random() < 0.5 else ("b", "a")
        blocks.insert(r.randint(0, len(blocks)), [(speakers[0], first), (speakers[1], second)])
        length += 2
    if length < 4:  # very short arrangements still get a last word
        blocks.append([("b", closing[1])])

    names = {"a": a, "b": b, "c": c}
    fill = dict(a=a, b=b, c=c, city=r.choice(CITIES))
    lines = [
        f"{names[who]}: {_capitalise(text.format(**fill))}"
        for block in blocks
        for who, text in block
    ]
    target_text = " ".join(_capitalise(s.format(**fill)) for s in summary)
    return {"source": "\n".join(lines), "target": target_text}


def _capitalise(text: str) -> str:
    """Upper-case the first letter of every sentence (the tokenizer lower-cases it back)."""
    return re.sub(r"(^|[.?!] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def generate_corpus(n: int, seed: int = 0) -> list[dict]:
    """``n`` dialogues as ``{"source": dialogue, "target": summary}``, deterministic in ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0 (got {n})")
    return [_dialogue(random.Random(f"nash-demo/{seed}/{i}")) for i in range(n)]
