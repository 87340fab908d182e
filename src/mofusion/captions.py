"""Natural-language captions for label-annotated motion (Bandai-Namco's content x style labels).

A caption is built from a template, a subject, a phrasing of the action and a phrasing of the style
("a person walks happily", "someone walking in a cheerful mood"). Every list has phrasings used for
training and phrasings held out of it: test captions contain at least one held-out element, so the
test set measures wording the model never saw ("someone strolls along cheerfully").

Captions are enumerated deterministically; the caption *label* (``content/style``) is what two
captions of the same motion class share (retrieval metrics never pool two motions of one label).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "test"]

# (third person, gerund) phrasings of each action: [trained], [held out]
ACTIONS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    "walk": ([("walks", "walking"), ("walks forward", "walking forward")],
             [("strolls along", "strolling along"), ("ambles", "ambling")]),
    "run": ([("runs", "running"), ("jogs", "jogging")], [("trots along", "trotting along")]),
    "dash": ([("dashes", "dashing"), ("sprints", "sprinting")], [("rushes forward", "rushing forward")]),
    "walk-back": ([("walks backwards", "walking backwards"), ("steps backwards", "stepping backwards")],
                  [("backs away", "backing away")]),
    "walk-left": ([("walks to the left", "walking to the left"),
                   ("walks sideways to the left", "walking sideways to the left")],
                  [("sidesteps to the left", "sidestepping to the left")]),
    "walk-right": ([("walks to the right", "walking to the right"),
                    ("walks sideways to the right", "walking sideways to the right")],
                   [("sidesteps to the right", "sidestepping to the right")]),
    "bow": ([("bows", "bowing"), ("takes a bow", "taking a bow")],
            [("bends forward in a bow", "bending forward in a bow")]),
    "bye": ([("waves goodbye", "waving goodbye"), ("says bye with a hand", "saying bye with a hand")],
            [("waves farewell", "waving farewell")]),
    "byebye": ([("waves bye-bye", "waving bye-bye"), ("waves goodbye again and again",
                                                    "waving goodbye again and again")],
               [("waves a big goodbye", "waving a big goodbye")]),
    "guide": ([("guides someone", "guiding someone"), ("shows the way", "showing the way")],
              [("points the way", "pointing the way")]),
    "respond": ([("responds", "responding"), ("answers a call", "answering a call")],
                [("replies", "replying")]),
    "call": ([("calls someone over", "calling someone over"), ("beckons", "beckoning")],
             [("calls out to someone", "calling out to someone")]),
    "punch": ([("punches", "punching"), ("throws a punch", "throwing a punch")],
              [("hits with a fist", "hitting with a fist")]),
    "kick": ([("kicks", "kicking"), ("does a kick", "doing a kick")],
             [("kicks out a leg", "kicking out a leg")]),
    "slash": ([("slashes", "slashing"), ("slashes with a sword", "slashing with a sword")],
              [("swings a blade", "swinging a blade")]),
    "dance-long": ([("dances", "dancing"), ("dances for a long time", "dancing for a long time")],
                   [("performs a long dance", "performing a long dance")]),
    "dance-short": ([("dances briefly", "dancing briefly"), ("does a short dance", "doing a short dance")],
                    [("performs a short dance", "performing a short dance")]),
    "walk-turn-left": ([("walks and turns left", "walking and turning left"),
                        ("turns left while walking", "turning left while walking")],
                       [("walks, veering to the left", "walking, veering to the left")]),
    "walk-turn-right": ([("walks and turns right", "walking and turning right"),
                         ("turns right while walking", "turning right while walking")],
                        [("walks, veering to the right", "walking, veering to the right")]),
    "wave-both-hands": ([("waves both hands", "waving both hands"),
                         ("waves with both hands", "waving with both hands")],
                        [("waves both arms", "waving both arms")]),
    "wave-left-hand": ([("waves the left hand", "waving the left hand"),
                        ("waves with the left hand", "waving with the left hand")],
                       [("waves the left arm", "waving the left arm")]),
    "wave-right-hand": ([("waves the right hand", "waving the right hand"),
                         ("waves with the right hand", "waving with the right hand")],
                        [("waves the right arm", "waving the right arm")]),
    "raise-up-both-hands": ([("raises both hands", "raising both hands"),
                             ("puts both hands up", "putting both hands up")],
                            [("lifts both arms", "lifting both arms")]),
    "raise-up-left-hand": ([("raises the left hand", "raising the left hand"),
                            ("puts the left hand up", "putting the left hand up")],
                           [("lifts the left arm", "lifting the left arm")]),
    "raise-up-right-hand": ([("raises the right hand", "raising the right hand"),
                             ("puts the right hand up", "putting the right hand up")],
                            [("lifts the right arm", "lifting the right arm")]),
}  # fmt: skip

# Style phrasings: ("manner", adverbial phrase) follows the verb; ("subject", noun phrase) replaces
# the subject. [trained], [held out]
Phrase = tuple[Literal["manner", "subject"], str]
STYLES: dict[str, tuple[list[Phrase], list[Phrase]]] = {
    "normal": ([("manner", ""), ("manner", "normally"), ("manner", "in an ordinary way")],
               [("manner", "casually")]),
    "happy": ([("manner", "happily"), ("manner", "in a happy mood"), ("manner", "joyfully")],
              [("manner", "cheerfully"), ("manner", "in a cheerful mood")]),
    "sad": ([("manner", "sadly"), ("manner", "in a sad mood")],
            [("manner", "sorrowfully"), ("manner", "gloomily")]),
    "angry": ([("manner", "angrily"), ("manner", "in an angry mood")],
              [("manner", "furiously"), ("manner", "in a rage")]),
    "proud": ([("manner", "proudly"), ("manner", "with pride")], [("manner", "arrogantly")]),
    "not-confident": ([("manner", "without confidence"), ("manner", "timidly")],
                      [("manner", "shyly"), ("manner", "nervously")]),
    "masculinity": ([("manner", "in a masculine way"), ("manner", "like a man")],
                    [("manner", "in a manly way")]),
    "masculine": ([("manner", "in a masculine way"), ("manner", "like a man")],
                  [("manner", "in a manly way")]),
    "feminine": ([("manner", "in a feminine way"), ("manner", "like a woman")],
                 [("manner", "in a ladylike way")]),
    "childish": ([("manner", "childishly"), ("manner", "like a child")],
                 [("manner", "like a little kid"), ("subject", "a small child")]),
    "old": ([("manner", "like an old person"), ("subject", "an old person")],
            [("subject", "an old man"), ("manner", "like a senior")]),
    "elderly": ([("manner", "like an elderly person"), ("subject", "an elderly person")],
                [("subject", "an old woman"), ("manner", "like a grandparent")]),
    "tired": ([("manner", "tiredly"), ("manner", "in a tired way")],
              [("manner", "wearily"), ("subject", "a tired person")]),
    "exhausted": ([("manner", "in an exhausted way"), ("manner", "like someone exhausted")],
                  [("manner", "like someone worn out"), ("subject", "an exhausted person")]),
    "active": ([("manner", "actively"), ("manner", "energetically")],
               [("manner", "vigorously"), ("manner", "full of energy")]),
    "musical": ([("manner", "musically"), ("manner", "like in a musical")], [("manner", "theatrically")]),
    "giant": ([("manner", "like a giant"), ("subject", "a giant")], [("manner", "like a huge monster")]),
    "chimpira": ([("manner", "like a thug"), ("manner", "like a punk")],
                 [("manner", "like a hoodlum"), ("subject", "a street punk")]),
    "youthful": ([("manner", "youthfully"), ("manner", "like a young person")],
                 [("manner", "like a teenager"), ("subject", "a young person")]),
}  # fmt: skip

SUBJECTS: tuple[list[str], list[str]] = (
    ["a person", "someone", "a man", "a woman"],
    ["somebody", "a figure"],
)

# templates: {subject} {verb} {gerund} {manner}; [trained], [held out]
TEMPLATES: tuple[list[str], list[str]] = (
    ["{subject} {verb}{manner}", "{subject} is {gerund}{manner}", "{subject} {gerund}{manner}"],
    ["{subject} can be seen {gerund}{manner}", "here {subject} {verb}{manner}"],
)

CAPTIONS_PER_LABEL = 32


@dataclass(frozen=True)
class Caption:
    text: str
    label: str
    held_out: bool


def caption_label(labels: dict[str, str]) -> str:
    """The class two motions share when their captions describe the same thing (for written
    captions, as HumanML3D's: the source clip)."""
    if "captions" in labels:
        return labels.get("source") or labels["captions"].split("\n")[0]
    return f"{labels.get('content', '')}/{labels.get('style', '')}"


def has_captions(labels: dict[str, str]) -> bool:
    """Written captions (``captions``, one per line) or content/style labels we can phrase."""
    if labels.get("captions", "").strip():
        return True
    return labels.get("content") in ACTIONS and labels.get("style", "normal") in STYLES


def anchor_caption(labels: dict[str, str]) -> str:
    """One trained caption naming a class plainly (first template, subject, action and style
    phrasings: "a person walks happily"); for written captions, the first one."""
    if "captions" in labels:
        return next(c.strip() for c in labels["captions"].split("\n") if c.strip())
    content, style = labels.get("content"), labels.get("style", "normal")
    if content not in ACTIONS or style not in STYLES:
        raise KeyError(f"no caption phrasings for content {content!r} and style {style!r}")
    kind, words = STYLES[style][0][0]
    subject, manner = (words, "") if kind == "subject" else (SUBJECTS[0][0], f" {words}" if words else "")
    verb, gerund = ACTIONS[content][0][0]
    return TEMPLATES[0][0].format(subject=subject, verb=verb, gerund=gerund, manner=manner)


def captions_for(labels: dict[str, str], split: Split, limit: int = CAPTIONS_PER_LABEL) -> list[str]:
    """Captions of one motion class, deterministic: only trained phrasings for ``"train"``, and for
    ``"test"`` only captions with at least one held-out phrasing. Written captions (HumanML3D) are
    returned as they are for either split: their data set splits by motion, not by wording."""
    if "captions" in labels:
        return [c.strip() for c in labels["captions"].split("\n") if c.strip()][:limit]
    content, style = labels.get("content"), labels.get("style", "normal")
    if content not in ACTIONS or style not in STYLES:
        raise KeyError(f"no caption phrasings for content {content!r} and style {style!r}")
    pools = (
        [(t, False) for t in TEMPLATES[0]] + [(t, True) for t in TEMPLATES[1]],
        [(s, False) for s in SUBJECTS[0]] + [(s, True) for s in SUBJECTS[1]],
        [(a, False) for a in ACTIONS[content][0]] + [(a, True) for a in ACTIONS[content][1]],
        [(p, False) for p in STYLES[style][0]] + [(p, True) for p in STYLES[style][1]],
    )
    texts: set[str] = set()
    for (template, h1), (subject, h2), (action, h3), (phrase, h4) in itertools.product(*pools):
        held = h1 or h2 or h3 or h4
        if held != (split == "test"):
            continue
        kind, words = phrase
        if kind == "subject":
            if h2:  # a style subject replaces the subject list: its held-out flag is not in play
                continue
            subject, manner = words, ""
        else:
            manner = f" {words}" if words else ""
        texts.add(template.format(subject=subject, verb=action[0], gerund=action[1], manner=manner))
    ordered = sorted(texts)
    random.Random(f"{content}/{style}/{split}").shuffle(ordered)
    return ordered[:limit]
