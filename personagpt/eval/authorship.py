"""Authorship share: does a model's reply read as written by the persona?

A character n-gram classifier (scikit-learn: TF-IDF of character 2–5-grams within word boundaries, case kept,
then logistic regression with balanced class weights) learns the persona's replies against other speakers' turns
of the dataset's **train** split (at most ``max_per_class`` each, chosen with the seed). On the held-out split it
reports its balanced accuracy (chance 0.5) and the share of the persona's real replies it attributes to the
persona: the ceiling a model's generated replies can reach. A model's authorship share is the share of its
generated replies attributed to the persona; other speakers' share is the floor.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from personagpt.errors import PersonaGPTError


def split_texts(samples: Sequence[dict]) -> tuple[list[str], list[str]]:
    """(the persona's replies, other speakers' turns) of a split, de-duplicated, non-empty."""
    persona, others = {}, {}
    for s in samples:
        for m in s["messages"]:
            t = m["content"].strip()
            if t and m["role"] == "assistant":
                persona[t] = None
            elif t and m["role"] == "user":
                others[t] = None
    both = persona.keys() & others.keys()
    return [t for t in persona if t not in both], [t for t in others if t not in both]


@dataclass
class Authorship:
    pipeline: object

    @classmethod
    def fit(cls, train: Sequence[dict], max_per_class: int, seed: int) -> Authorship:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        persona, others = split_texts(train)
        if len(persona) < 2 or len(others) < 2:
            raise PersonaGPTError(f"authorship classifier: the train split has {len(persona)} persona replies and "
                                  f"{len(others)} other speakers' turns; it needs at least 2 of each")
        rng = random.Random(seed)
        persona = rng.sample(persona, min(max_per_class, len(persona)))
        others = rng.sample(others, min(max_per_class, len(others)))
        clf = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), lowercase=False, sublinear_tf=True, min_df=2),
            LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed))
        clf.fit(persona + others, [1] * len(persona) + [0] * len(others))
        return cls(clf)

    def attributed(self, texts: Sequence[str]) -> list[int]:
        """1 per text the classifier attributes to the persona (an empty reply never is)."""
        texts = list(texts)
        if not texts:
            return []
        pred = self.pipeline.predict([t if t.strip() else " " for t in texts])
        return [int(p) if t.strip() else 0 for p, t in zip(pred, texts, strict=True)]
