"""Style statistics of a list of replies (generated or real), each a plain function of the strings.

Rules (the README defines them the same way):
- words: whitespace-separated tokens; a reply's length is its number of words.
- lowercase start: the first non-space character is a lowercase letter.
- question mark / emoji: the reply contains at least one ``?`` / one emoji (the ``emoji`` package's list).
- distinct-n (Li et al. 2016): distinct word n-grams / all word n-grams over all replies (words lowercased).
- empty: nothing but whitespace.
- repetition loop: some word n-gram (1 <= n <= 8) occurs at least 3 times in a row (``a a a``, ``I am sure. I am
  sure. I am sure.``), the degenerate output of greedy decoding.
- length KS: the two-sample Kolmogorov–Smirnov distance between generated and real reply lengths (scipy).
"""

from __future__ import annotations

from collections.abc import Sequence

import emoji

LOOP_MAX_N = 8
LOOP_REPEATS = 3


def words(text: str) -> list[str]:
    return text.split()


def lowercase_start(text: str) -> bool:
    s = text.lstrip()
    return bool(s) and s[0].islower()


def has_question(text: str) -> bool:
    return "?" in text


def has_emoji(text: str) -> bool:
    return emoji.emoji_count(text) > 0


def is_empty(text: str) -> bool:
    return not text.strip()


def is_loop(text: str, max_n: int = LOOP_MAX_N, repeats: int = LOOP_REPEATS) -> bool:
    """Some word n-gram (n <= max_n) occurs ``repeats`` times in a row."""
    w = [x.lower() for x in words(text)]
    for n in range(1, max_n + 1):
        for i in range(len(w) - n * repeats + 1):
            gram = w[i:i + n]
            if all(w[i + k * n:i + (k + 1) * n] == gram for k in range(1, repeats)):
                return True
    return False


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over ``texts`` (0.0 when there are none)."""
    grams = [tuple(w[i:i + n]) for t in texts for w in [[x.lower() for x in words(t)]] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def share(texts: Sequence[str], pred) -> float:
    return sum(1 for t in texts if pred(t)) / len(texts) if texts else 0.0


def length_ks(generated: Sequence[str], real: Sequence[str]) -> float:
    from scipy.stats import ks_2samp

    if not generated or not real:
        return 1.0
    return float(ks_2samp([len(words(t)) for t in generated], [len(words(t)) for t in real]).statistic)


# name -> per-reply predicate (a share of replies) or whole-list statistic
SHARES = {"lowercase_start": lowercase_start, "question_mark": has_question, "emoji": has_emoji,
          "empty": is_empty, "repetition_loop": is_loop}
DISTINCT = {"distinct_1": lambda t: distinct_n(t, 1), "distinct_2": lambda t: distinct_n(t, 2)}


def mean_words(texts: Sequence[str]) -> float:
    return sum(len(words(x)) for x in texts) / len(texts) if texts else 0.0
