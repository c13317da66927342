"""How often sentence splitters break at abbreviations, and how many real sentence ends they find,
on passages of the embedded corpus (the comparison behind the choice in data/sentences.py).

    python benchmarks/eval_sentences.py CORPUS_DIR   # a built corpus: *.jsonl with a "text" field

Passages are 1,200-character windows around (a) an abbreviation followed by a word (``Mr. Weston``,
``e.g. the``, ``U.S. law``): a split there is false; (b) a lower-case word, a full stop and a
common sentence opener: a split there is a real end. pysbd is scored when it is installed.
"""
from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Callable

ABBREVIATED = re.compile(r"\b(?:(?:Mr|Mrs|Dr|St|Prof|Messrs|Gen|Col|Capt|Rev|Sen)\. (?=[A-Z])"
                         r"|(?:e\.g\.|i\.e\.|cf\.|vs\.|etc\.,|viz\.|approx\.|Fig\.|No\.) |U\.S\. (?=[a-z]))")
REAL_END = re.compile(r"\b[a-z]{4,}[.!?] (?=(?:The|It|This|In|He|She|They|We|A|If|When|But|And) )")
OLD_REGEX = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])")


def passages(texts: list[str], pattern: re.Pattern, n: int, rng: random.Random) -> list[tuple[str, int]]:
    """(window, offset of the candidate boundary in it) for up to ``n`` random matches."""
    found = []
    for t in texts:
        for m in pattern.finditer(t):
            start = max(0, m.start() - 600)
            found.append((t[start:m.end() + 600], m.end() - start))
    rng.shuffle(found)
    return found[:n]


def starts(split: Callable[[str], list[str]], text: str) -> set[int]:
    """Character offsets where the splitter starts a sentence."""
    out, pos = set(), 0
    for s in split(text):
        i = text.find(s.strip(), pos)
        if i >= 0:
            out.add(i)
            pos = i + len(s.strip())
    return out


def score(name: str, split: Callable[[str], list[str]], bad: list, good: list) -> None:
    t0 = time.perf_counter()
    false = sum(at in starts(split, t) for t, at in bad)
    real = sum(at in starts(split, t) for t, at in good)
    print(f"{name:30s} false splits at abbreviations {false / len(bad):6.1%}  real ends found "
          f"{real / len(good):6.1%}  {time.perf_counter() - t0:5.1f} s for {len(bad) + len(good)} passages")


def main(corpus: Path) -> None:
    texts = [" ".join(json.loads(line)["text"].split()) for f in sorted(corpus.glob("*.jsonl")) for line in f.open()]
    rng = random.Random(0)
    bad, good = passages(texts, ABBREVIATED, 1500, rng), passages(texts, REAL_END, 1500, rng)
    print(f"{len(texts):,} documents; {len(bad)} abbreviation passages, {len(good)} sentence-end passages")
    score("regex (before)", lambda t: [s for s in OLD_REGEX.split(t) if s], bad, good)
    from proxyscale.data.sentences import sentences

    score("proxyscale (Punkt + list)", sentences, bad, good)
    try:
        import pysbd
    except ImportError:
        print("pysbd not installed: skipped")
    else:
        score(f"pysbd {pysbd.__version__}", pysbd.Segmenter(language="en", clean=False).segment, bad, good)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python benchmarks/eval_sentences.py CORPUS_DIR (a built corpus folder of *.jsonl files)")
    main(Path(sys.argv[1]))
