"""Write ``style_pairs.json``: modern English sentences and an Early Modern ("Shakespearean") version of each.

Used by the project "Style transfer" (``book/projects/style_transfer.ipynb``). There is no parallel
corpus of modern and Shakespearean English that the course could ship, so the course writes its
own: the templates, word lists and rewriting rules below were written for this course (MIT, like
the rest of its text and code). Run from the repository root::

    python book/projects/data/make_style_pairs.py

The output is deterministic (a fixed seed); the split into training and test pairs is stored in the
file itself (``"split"`` of each pair), so the notebook never re-draws it.

What the rewriting knows (the grammar of Shakespeare's time, much simplified):

- ``you`` as a subject is *thou*, as an object *thee*; ``your`` is *thy*, or *thine* before a vowel;
- verbs after *thou* take ``-est`` (*thou knowest*, *thou hast*, *thou art*, *thou dost*), after
  he / she / a name ``-eth`` (*she knoweth*, *he hath*, *he doth*);
- questions and negations without "do": ``Do you know him?`` -> *Knowest thou him?*,
  ``I do not know`` -> *I know not*;
- a few single words: *ay*, *nay*, *perchance*, *oft*, *ere*, *hither*, *whither*, *'tis*, and a
  list of fixed phrases (``How are you?`` -> *How dost thou fare?*).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 0
TEST_FRACTION = 0.2

# verb: (modern 3rd person, "thou" form, "he" form)
VERBS = {
    "love": ("loves", "lovest", "loveth"),
    "know": ("knows", "knowest", "knoweth"),
    "see": ("sees", "seest", "seeth"),
    "hear": ("hears", "hearest", "heareth"),
    "fear": ("fears", "fearest", "feareth"),
    "trust": ("trusts", "trustest", "trusteth"),
    "seek": ("seeks", "seekest", "seeketh"),
    "keep": ("keeps", "keepest", "keepeth"),
    "hate": ("hates", "hatest", "hateth"),
    "serve": ("serves", "servest", "serveth"),
    "remember": ("remembers", "rememberest", "remembereth"),
    "want": ("wants", "wantest", "wanteth"),
}
OBJECTS = ["the king", "the queen", "my brother", "her father", "the duke", "this man", "the truth",
           "the sea", "his sword", "the night", "my lady", "the crown", "the letter", "the moon"]
NAMES = ["Romeo", "Juliet", "Hamlet", "Portia", "Macbeth", "Viola", "Antonio", "Rosalind"]
THIRD = ["he", "she"] + NAMES
ADJECTIVES = ["kind", "sad", "wise", "cruel", "young", "fair", "angry", "honest", "proud", "gentle",
              "foolish", "brave", "tired", "merry"]
NOUNS = ["heart", "sword", "horse", "house", "name", "father", "friend", "mother", "love", "eyes",
         "honour", "answer", "ear", "uncle", "enemy", "arm"]
PLURAL_NOUNS = {"eyes"}  # "your eyes are ..." / "thine eyes are ..."
PLACES = ["the castle", "the forest", "the market", "the church", "the garden", "the sea", "Verona",
          "Rome", "the tavern", "the court"]

# Fixed phrases: the part of the style that is rephrasing, not word-for-word substitution.
FIXED = [
    ("How are you?", "How dost thou fare?"),
    ("Where are you going?", "Whither goest thou?"),
    ("Come here.", "Come hither."),
    ("Go there.", "Go thither."),
    ("Goodbye.", "Fare thee well."),
    ("Listen to me.", "Hark, hear me."),
    ("I think so.", "Methinks it is so."),
    ("What time is it?", "What hour is it?"),
    ("Please help me.", "Prithee, help me."),
    ("Thank you.", "I thank thee."),
    ("Why?", "Wherefore?"),
    ("Be quiet.", "Peace, hold thy tongue."),
    ("Good morning.", "Good morrow."),
    ("I am very tired.", "I am exceeding weary."),
    ("Nothing.", "Naught."),
]


def thy(noun: str) -> str:
    return ("thine " if noun[0] in "aeiou" or noun.startswith("hon") else "thy ") + noun


def be_modern(noun: str) -> str:
    return "are" if noun in PLURAL_NOUNS else "is"


def cap(text: str) -> str:
    """Upper-case the first letter (of "'tis" too: "'Tis")."""
    i = 1 if text.startswith("'") else 0
    return text[:i] + text[i].upper() + text[i + 1:]


def templates(rng: random.Random) -> list[tuple[str, str, str]]:
    """(template name, modern, shakespearean) for every combination some template draws."""
    out: list[tuple[str, str, str]] = []

    def add(name: str, modern: str, old: str) -> None:
        out.append((name, cap(modern), cap(old)))

    for adj in ADJECTIVES:
        add("you are ADJ", f"you are {adj}.", f"thou art {adj}.")
        add("are you ADJ?", f"are you {adj}?", f"art thou {adj}?")
        add("it is ADJ", f"it is {adj}.", f"'tis {adj}.")
        add("you were ADJ", f"you were {adj}.", f"thou wast {adj}.")
    for noun in NOUNS:
        adj = rng.choice(ADJECTIVES)
        add("your NOUN is ADJ", f"your {noun} {be_modern(noun)} {adj}.", f"{thy(noun)} {be_modern(noun)} {adj}.")
        add("where is your NOUN?", f"where {be_modern(noun)} your {noun}?", f"where {be_modern(noun)} {thy(noun)}?")
        add("I give you my NOUN", f"I give you my {noun}.", f"I give thee my {noun}.")
        subject = rng.choice(THIRD)
        add("X has a NOUN", f"{subject} has your {noun}.", f"{subject} hath {thy(noun)}.")
        add("you have my NOUN", f"you have my {noun}.", f"thou hast my {noun}.")
    for verb, (third, thou, eth) in VERBS.items():
        for obj in rng.sample(OBJECTS, 5):
            add("you VERB OBJ", f"you {verb} {obj}.", f"thou {thou} {obj}.")
            add("do you VERB OBJ?", f"do you {verb} {obj}?", f"{thou} thou {obj}?")
            subject = rng.choice(THIRD)
            add("X VERBs OBJ", f"{subject} {third} {obj}.", f"{subject} {eth} {obj}.")
            add("I do not VERB OBJ", f"I do not {verb} {obj}.", f"I {verb} not {obj}.")
            subject = rng.choice(THIRD)
            add("X VERBs you", f"{subject} {third} you.", f"{subject} {eth} thee.")
            subject = rng.choice(THIRD)
            add("does X VERB you?", f"does {subject} {verb} you?", f"doth {subject} {verb} thee?")
    for place in PLACES:
        add("where are you going", f"are you going to {place}?", f"goest thou to {place}?")
        add("I will go", f"I will go to {place} before night.", f"I will go to {place} ere night.")
        add("perhaps", f"perhaps he is in {place}.", f"perchance he is in {place}.")
        subject = rng.choice(THIRD)
        add("often", f"{subject} often goes to {place}.", f"{subject} oft goeth to {place}.")
    for adj in ADJECTIVES:
        add("yes, you are", f"yes, you are {adj}.", f"ay, thou art {adj}.")
        add("no, I am not", f"no, I am not {adj}.", f"nay, I am not {adj}.")
    for modern, old in FIXED:
        out.append(("fixed phrase", modern, old))
    return out


def main() -> None:
    rng = random.Random(SEED)
    pairs = templates(rng)
    seen, unique = set(), []
    for name, modern, old in pairs:
        if modern not in seen:  # a few combinations repeat; keep each modern sentence once
            seen.add(modern)
            unique.append((name, modern, old))
    order = list(range(len(unique)))
    rng.shuffle(order)
    n_test = round(TEST_FRACTION * len(unique))
    test = set(order[:n_test])
    # The fixed phrases occur once each: a test phrase was never seen in training, so the model
    # cannot know it (kept in the test split on purpose; the notebook reports them separately).
    records = [{"modern": m, "shakespearean": s, "template": t, "split": "test" if i in test else "train"}
               for i, (t, m, s) in enumerate(unique)]
    data = {
        "description": "Modern English sentences paired with an Early Modern ('Shakespearean') version, for the "
                       "course's style-transfer project. Generated from templates, word lists and rewriting rules "
                       "written for the course 'Build an LLM from scratch' by book/projects/data/"
                       "make_style_pairs.py (seed 0); no sentence is quoted from Shakespeare or any corpus.",
        "licence": "MIT (the course's licence)",
        "split": f"{len(unique) - n_test} train / {n_test} test pairs, drawn at random with seed {SEED} and stored "
                 "in each pair's 'split'",
        "pairs": records,
    }
    path = Path(__file__).with_name("style_pairs.json")
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(records)} pairs ({n_test} test) to {path}")


if __name__ == "__main__":
    main()
