"""Turn unpacked Debian packages (or the Python installation) into plain-text documents.

Every extractor takes the unpacked package roots and returns a list of *candidates*
``(doc_id, load)`` in a fixed order; ``load()`` returns ``(text, title)`` or ``None`` to skip.
Loading is lazy so the corpus builder can stop once a domain reaches its byte cap without
rendering the rest (manual pages are rendered by groff, one process per page).
"""
from __future__ import annotations

import ast
import gzip
import re
import shutil
import subprocess
import sysconfig
import threading
from pathlib import Path
from typing import Callable, Optional

Loaded = Optional[tuple[str, Optional[str]]]
Candidate = tuple[str, Callable[[], Loaded]]

_OVERSTRIKE = re.compile(r".\x08")
_BOX = re.compile("[\u2500-\u257f]+")
_BLANKS = re.compile(r"\n\s*\n\s*(\n\s*)+")
# CPython 3.11 keeps the AST converter's recursion depth per interpreter, not per thread: two
# ast.parse calls interleaved (a finalizer releasing the GIL mid-parse is enough) fail with
# "SystemError: AST constructor recursion depth mismatch". The corpus loads candidates in threads.
_AST_LOCK = threading.Lock()


def read_text(path: Path) -> str:
    """Read a text file as UTF-8, falling back to Latin-1 (some old packages predate UTF-8)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def tidy(text: str) -> str:
    """Strip overstrike sequences, trailing spaces and runs of blank lines."""
    text = _OVERSTRIKE.sub("", text).replace("\r\n", "\n").expandtabs(8)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip("\n")


def reflow(text: str) -> str:
    """Join the lines of each blank-line-separated paragraph with single spaces."""
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paras if p)


# ---------------------------------------------------------------- quotations (fortunes)
def fortunes(roots: dict[str, Path]) -> list[Candidate]:
    """One document per fortune cookie (items are separated by a line holding ``%``)."""
    base = roots["fortunes"] / "usr/share/games/fortunes"
    out: list[Candidate] = []
    for f in sorted(base.iterdir()):
        if f.is_symlink() or not f.is_file() or f.suffix in (".dat", ".u8"):
            continue
        items = re.split(r"\n%\n", "\n" + read_text(f) + "\n")
        for k, item in enumerate(items):
            text = tidy(item)
            if text and text != "%":
                out.append((f"fortunes/{f.name}/{k}", lambda t=text: (t, None)))
    return out


# ---------------------------------------------------------------- scripture (KJV)
_CHAPTER = re.compile(r"^((?:[1-3] )?[A-Z][A-Za-z ]+?) (\d+)$", re.M)
_VERSE = re.compile(r"^\s*\d+\s+", re.M)


def bible(roots: dict[str, Path]) -> list[Candidate]:
    """One document per chapter, printed by the ``bible`` program of bible-kjv."""
    prog = roots["bible-kjv"] / "usr/bin/bible"
    data = roots["bible-kjv-text"] / "usr/lib"
    res = subprocess.run([str(prog), "-p", str(data), "Gen1:1-Rev22:21"], capture_output=True, timeout=120)
    if res.returncode != 0 or not res.stdout:
        raise RuntimeError(f"the bible program failed: {res.stderr.decode(errors='replace')[:200]}")
    full = res.stdout.decode("utf-8", errors="replace")
    heads = list(_CHAPTER.finditer(full))
    out: list[Candidate] = []
    for i, m in enumerate(heads):
        body = full[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(full)]
        # one verse per line, numbers dropped: verse numbers are layout, not language
        verses = [" ".join(v.split()) for v in _VERSE.split(body) if v.strip()]
        title = f"{m.group(1)} {m.group(2)}"
        out.append((f"bible/{title}", lambda t="\n".join(verses), h=title: (t, h)))
    return out


# ---------------------------------------------------------------- dictd dictionaries
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_POS = {"n", "v", "a", "adj", "adv", "prep", "conj", "interj", "pron", "pl", "sing", "imp", "p", "pr",
        "t", "i", "vt", "vi", "vb", "obs", "pp", "superl", "compar", "n.,v", "v.,n"}
_PLURAL = re.compile(r"pl\.\s*\{[^}]*\}")
_SOURCE_TAG = re.compile(r"\[(?:1913 Webster|Webster 1913[^\]]*|WordNet[^\]]*|PJC|[A-Z]{2,4})\]")


def _b64int(s: str) -> int:
    v = 0
    for ch in s:
        v = v * 64 + _B64.index(ch)
    return v


def _skip_group(s: str, i: int, open_: str, close: str) -> int:
    """Index just past the balanced group starting at s[i] == open_ (or i if unbalanced)."""
    depth = 0
    for j in range(i, len(s)):
        depth += (s[j] == open_) - (s[j] == close)
        if depth == 0:
            return j + 1
    return i


def strip_entry_header(s: str) -> str:
    """Drop a leading run of part-of-speech labels, [etymologies], (field labels), /pronunciations/."""
    i = 0
    while i < len(s):
        ch = s[i]
        if ch.isspace() or ch in ",;&-.":
            i += 1
        elif m := _PLURAL.match(s, i):  # "pl. {Forms}" belongs to the header
            i = m.end()
        elif ch in "[(":
            j = _skip_group(s, i, ch, "]" if ch == "[" else ")")
            if j == i:
                break
            i = j
        elif ch == "/" and "/" in s[i + 1: i + 40]:
            i = s.index("/", i + 1) + 1
        else:
            m = re.match(r"([a-z]+(?:\.,?[a-z]+)*)\.", s[i:])
            if m and m.group(1).replace(" ", "") in _POS:
                i += m.end()
            else:
                break
    return s[i:]


def _clean_definition(body: str) -> str:
    body = _SOURCE_TAG.sub("", body).replace("{", "").replace("}", "")
    return reflow(body)


def _gcide_entry(block: str) -> Loaded:
    m = re.match(r"\s*([^\\\n]+?)\s*\\[^\\]*\\", block)
    if not m:
        return None
    text = _clean_definition(strip_entry_header(block[m.end():]))
    return (text, m.group(1).strip()) if text else None


def _titled_entry(block: str) -> Loaded:
    """foldoc/jargon/devil: headword line(s), a blank line, then the definition."""
    head, _, body = block.strip("\n").partition("\n\n")
    title = head.split("\n")[0].strip()
    if not body.strip():  # devil style: "WORD, n.  Definition" on one paragraph
        title, _, body = head.partition(",")
        title = title.strip().title()
    body = re.sub(r"\n\s*\(\d{4}-\d{2}-\d{2}\)\s*$", "", body.rstrip())  # foldoc edit date
    body = strip_entry_header(re.sub(r"^\s*<[^>\n]{1,40}>\s*", "", body))  # foldoc <category>
    text = _clean_definition(body)
    return (text, title) if text and title else None


def dictd(root: Path, db: str, parse: Callable[[str], Loaded]) -> list[Candidate]:
    """One candidate per distinct entry of a dictd database (several headwords may share one)."""
    base = next(iter(sorted(root.glob(f"usr/share/dictd/{db}.index"))), None)
    if base is None:
        raise RuntimeError(f"{db}.index not found under {root}")
    data = gzip.open(base.with_name(f"{db}.dict.dz")).read()
    seen: set[tuple[int, int]] = set()
    counts: dict[str, int] = {}
    out: list[Candidate] = []
    for line in base.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00") or parts[0] == "":
            continue
        span = (_b64int(parts[1]), _b64int(parts[2]))
        if span in seen:
            continue
        seen.add(span)
        k = counts[parts[0]] = counts.get(parts[0], -1) + 1
        block = data[span[0]: span[0] + span[1]].decode("utf-8", errors="replace")
        out.append((f"{db}/{parts[0]}#{k}", lambda b=block: parse(b)))
    return out


def gcide(roots: dict[str, Path]) -> list[Candidate]:
    return dictd(roots["dict-gcide"], "gcide", _gcide_entry)


def computing(roots: dict[str, Path]) -> list[Candidate]:
    return dictd(roots["dict-foldoc"], "foldoc", _titled_entry) + dictd(roots["dict-jargon"], "jargon", _titled_entry)


# ---------------------------------------------------------------- reST documentation
_SPDX = re.compile(r"^\.\. SPDX-License-Identifier:.*\n", re.M)


def _rst_tree(src: Path, prefix: str, skip: tuple[str, ...] = ()) -> list[Candidate]:
    out: list[Candidate] = []
    for f in sorted(src.rglob("*.txt")):
        rel = f.relative_to(src).as_posix()
        if any(rel.startswith(s) for s in skip):
            continue
        name = rel.removesuffix(".txt").removesuffix(".rst")
        out.append((f"{prefix}/{name}", lambda f=f, n=name: (tidy(_SPDX.sub("", read_text(f))), n)))
    return out


def pydoc(roots: dict[str, Path]) -> list[Candidate]:
    """The Python documentation's reST sources, one document per page."""
    (root,) = roots.values()
    srcs = sorted(root.glob("usr/share/doc/python3*/html/_sources"))
    if not srcs:
        raise RuntimeError("no usr/share/doc/python3*/html/_sources in the python doc package")
    return _rst_tree(srcs[-1], "pydoc", skip=("whatsnew/changelog",))


def kernel(roots: dict[str, Path]) -> list[Candidate]:
    """The Linux kernel documentation's reST sources (English only: translations skipped)."""
    (root,) = roots.values()
    srcs = sorted(root.glob("usr/share/doc/linux-doc-*/html/_sources"))
    if not srcs:
        raise RuntimeError("no usr/share/doc/linux-doc-*/html/_sources in the kernel doc package")
    return _rst_tree(srcs[-1], "kernel", skip=("translations/",))


# ---------------------------------------------------------------- manual pages
def render_man(source: str) -> str:
    """Render man(7) source to plain text with groff, or with a crude macro stripper without it."""
    if shutil.which("groff"):
        # no hyphenation, very long lines and left adjustment: paragraphs come out as single lines
        cmd = ["groff", "-t", "-man", "-Tutf8", "-rHY=0", "-rLL=4000n", "-dAD=l", "-P-c", "-P-b", "-P-u"]
        res = subprocess.run(cmd, input=source.encode("utf-8"), capture_output=True, timeout=60)
        lines = res.stdout.decode("utf-8", errors="replace").split("\n")
        keep = [i for i, ln in enumerate(lines) if ln.strip()]
        text = "\n".join(lines[keep[0] + 1: keep[-1]]) if len(keep) > 2 else ""  # drop running header/footer
    else:
        text = strip_man_macros(source)
    text = _BOX.sub(" ", text)  # tbl's box-drawing rules carry no language
    text = "\n".join(" ".join(ln.split()) for ln in tidy(text).split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


def strip_man_macros(source: str) -> str:
    """A small man(7) to text converter: section headings kept, font escapes and comments dropped."""
    out = []
    for line in source.split("\n"):
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith("."):
            macro, _, arg = line[1:].partition(" ")
            if macro in ("SH", "SS"):
                out.append("\n" + arg.strip('"'))
            elif macro in ("B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "SB"):
                out.append(re.sub(r'"', "", arg) if macro in ("B", "I") else arg.replace('"', "").replace(" ", ""))
            elif macro in ("PP", "LP", "P", "TP", "IP", "sp", "br"):
                out.append("")
            continue
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"\\f[BIRP]|\\f\(..|\\f\[[^\]]*\]|\\&|\\c$", "", text, flags=re.M)
    text = text.replace("\\-", "-").replace("\\(em", "\u2014").replace("\\(en", "\u2013").replace("\\e", "\\")
    return re.sub(r"\\\((..)", "", text)


def manpages(roots: dict[str, Path]) -> list[Candidate]:
    """Unix manual pages (skipping links and ``.so`` redirections), one document per page."""
    out: list[Candidate] = []
    for root in roots.values():
        for f in sorted(root.glob("usr/share/man/man*/*.gz")):
            if f.is_symlink():
                continue
            rel = f.relative_to(root / "usr/share/man").as_posix().removesuffix(".gz")

            def load(f: Path = f, rel: str = rel) -> Loaded:
                src = gzip.decompress(f.read_bytes()).decode("utf-8", errors="replace")
                body = [ln for ln in src.split("\n") if ln.strip() and not ln.startswith('.\\"')]
                if len(body) <= 2 and any(ln.startswith(".so ") for ln in body):
                    return None
                text = render_man(src)
                return (text, rel) if text else None

            out.append((f"man/{rel}", load))
    return out


# ---------------------------------------------------------------- the Python installation
def _stdlib_files() -> list[tuple[str, Path]]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for f in sorted(lib.rglob("*.py")):
        rel = f.relative_to(lib).as_posix()
        if "-packages/" in rel or rel.startswith(("test/", "idlelib/idle_test/", "lib2to3/tests/")):
            continue
        files.append((rel, f))
    return files


def python_code(_: dict[str, Path]) -> list[Candidate]:
    """Standard-library modules' source code, one document per file."""
    return [(f"pycode/{rel}", lambda f=f, r=rel: (tidy(read_text(f)), r)) for rel, f in _stdlib_files()]


def _docstrings(path: Path) -> Loaded:
    text = read_text(path)
    try:
        with _AST_LOCK:
            tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    docs = [d for d in (ast.get_docstring(n, clean=True) for n in nodes) if d and len(d) > 20]
    return ("\n\n".join(tidy(d) for d in docs), None) if docs else None


def python_docstrings(_: dict[str, Path]) -> list[Candidate]:
    """The docstrings of each standard-library module (technical English), one document per file."""
    return [(f"pydocstrings/{rel}", lambda f=f: _docstrings(f)) for rel, f in _stdlib_files()]


def python_reference(_: dict[str, Path]) -> list[Candidate]:
    """The language-reference topics that ``help()`` shows (pydoc_data/topics.py)."""
    from pydoc_data.topics import topics

    return [(f"pyref/{k}", lambda t=topics[k], k=k: (tidy(t), k)) for k in sorted(topics)]
