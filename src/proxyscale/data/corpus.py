"""The embedded corpus: real text from Debian packages (or the Python installation), built offline.

``build_corpus(out_dir)`` fetches a few Debian packages with ``apt-get download`` (never
installing them), unpacks them with ``dpkg-deb -x`` and writes one JSON-lines file per
*domain* (``<domain>.jsonl``: ``{"id", "text", "title"?}`` per line) plus ``manifest.json``
naming every package and version, byte and document counts and the sha256 of each file.

Domains larger than ``max_bytes_per_domain`` keep a deterministic pseudo-random subset of
their documents (ordered by a hash of the document id), so a cap samples the whole domain
rather than its alphabetical head. Where apt is unavailable (or ``use_apt=False``) the corpus
is built from the Python installation: stdlib code, stdlib docstrings, language reference.

The corpus is built in a staging directory beside ``out_dir`` and renamed into place (the
output policy, :mod:`proxyscale.store.output`), so a killed build leaves the old corpus, or
nothing, never a manifest that describes files that are not there.
"""
from __future__ import annotations

import errno
import hashlib
import json
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..config import suggest
from ..errors import DataError
from ..store import atomic_path, read_json, write_json
from . import extract

CORPUS_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_LOAD_CHUNK = 64
_LOAD_WORKERS = 4
_FETCH_WORKERS = 3  # packages downloaded and unpacked ahead of the domain being extracted
Progress = Optional[Callable[[str], None]]
_WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


@dataclass(frozen=True)
class DomainRecipe:
    """How to make one domain: package roles (each a tuple of alternative package names)."""

    packages: tuple[tuple[str, ...], ...]
    extract: Callable[[dict[str, Path]], list[extract.Candidate]]
    origin: str
    titled: bool = False  # documents are (headword, definition) dictionary entries


APT_DOMAINS: dict[str, DomainRecipe] = {
    "quotes": DomainRecipe((("fortunes",),), extract.fortunes,
                           "usr/share/games/fortunes/*: one document per fortune"),
    "bible": DomainRecipe((("bible-kjv",), ("bible-kjv-text",)), extract.bible,
                          "KJV printed by `bible -p usr/lib Gen1:1-Rev22:21`: one document per chapter"),
    "dictionary": DomainRecipe((("dict-gcide",),), extract.gcide,
                               "gcide.dict.dz + gcide.index: one document per entry, title = headword", True),
    "computing": DomainRecipe((("dict-foldoc",), ("dict-jargon",)), extract.computing,
                              "foldoc + jargon dictd databases: one document per entry, title = headword", True),
    "pydoc": DomainRecipe((("python3.11-doc", "python3.12-doc", "python3.13-doc"),), extract.pydoc,
                          "usr/share/doc/python3.*/html/_sources/**/*.txt (reST): one document per page"),
    "kernel": DomainRecipe((("linux-doc-6.1", "linux-doc-6.12", "linux-doc-5.10"),), extract.kernel,
                           "usr/share/doc/linux-doc-*/html/_sources (reST, no translations): one per page"),
    "manpages": DomainRecipe((("manpages",), ("manpages-dev",)), extract.manpages,
                             "usr/share/man/man*/*.gz rendered by groff -man -Tutf8: one document per page"),
}

PYTHON_DOMAINS: dict[str, DomainRecipe] = {
    "pycode": DomainRecipe((), extract.python_code, "Python standard library .py sources: one per module"),
    "pydocstrings": DomainRecipe((), extract.python_docstrings, "docstrings of the standard library: one per module"),
    "pyref": DomainRecipe((), extract.python_reference, "pydoc_data/topics.py language reference: one per topic"),
}
ALL_DOMAINS = {**APT_DOMAINS, **PYTHON_DOMAINS}


def apt_available() -> bool:
    """True when ``apt-get`` and ``dpkg-deb`` are on PATH."""
    return shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None


class _Apt:
    """Downloads (cached in ``deb_dir``) and unpacks Debian packages; runs ``apt-get update`` once."""

    def __init__(self, work_dir: Path, log: Callable[[str], None]):
        self.deb_dir = work_dir / "debs"
        self.unpack_dir = work_dir / "unpacked"
        self.updated = False
        self.log = log
        self._update_lock = threading.Lock()  # the prefetch threads download side by side

    def _download(self, name: str) -> Optional[Path]:
        self.deb_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            with tempfile.TemporaryDirectory(dir=self.deb_dir, prefix=".dl-") as tmp:
                res = subprocess.run(["apt-get", "download", name], cwd=tmp, capture_output=True, timeout=600)
                debs = sorted(Path(tmp).glob(f"{name}_*.deb"))
                if res.returncode == 0 and debs:
                    dest = self.deb_dir / debs[-1].name
                    debs[-1].replace(dest)  # a killed download leaves only a .dl-* temp dir
                    return dest
            if attempt > 0 or not self._update_once():
                break
        return None

    def _update_once(self) -> bool:
        """Run ``apt-get update`` unless it ran already; True when it ran now."""
        with self._update_lock:
            if self.updated:
                return False
            self.log("apt-get download failed; running apt-get update once")
            self.updated = True
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
            return True

    def prefetch(self, pool: ThreadPoolExecutor, domains: list[str]) -> dict[str, Future]:
        """Download and unpack every domain's packages in ``pool`` while earlier domains are
        extracted: the downloads wait on the network and ``dpkg-deb``, not on this process. Only
        warms the cache; a failure here is met again, and reported, by the build itself."""
        def warm(domain: str) -> None:
            for alternatives in ALL_DOMAINS[domain].packages:
                try:
                    self.unpack(self.fetch(alternatives)[1])
                except (RuntimeError, OSError, subprocess.SubprocessError):
                    return
        return {d: pool.submit(warm, d) for d in domains}

    def fetch(self, alternatives: tuple[str, ...]) -> tuple[str, Path]:
        """The first alternative that is cached or downloads: (package name, .deb path)."""
        for name in alternatives:
            cached = sorted(self.deb_dir.glob(f"{name}_*.deb"))
            deb = cached[-1] if cached else self._download(name)
            if deb is not None:
                return name, deb
        raise RuntimeError(f"apt-get download failed for {' / '.join(alternatives)}")

    def unpack(self, deb: Path) -> Path:
        dest = self.unpack_dir / deb.stem
        if not dest.is_dir():
            self.unpack_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.unpack_dir, prefix=".x-"))
            try:
                subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, capture_output=True, timeout=600)
                tmp.rename(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    @staticmethod
    def version(deb: Path) -> str:
        res = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, check=True, timeout=60)
        return res.stdout.decode().strip()


def _hash_order(domain: str, ids: Sequence[str]) -> list[int]:
    return sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{domain}\0{ids[i]}".encode()).digest())


def _write_domain(out_dir: Path, domain: str, candidates: list[extract.Candidate], cap: int) -> dict:
    """Load candidates in hash order until ``cap`` text bytes, write them (source order) as JSON lines."""
    ids = [c[0] for c in candidates]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"duplicate document ids in domain {domain}")
    kept: list[tuple[int, str, str, Optional[str]]] = []
    total = 0
    order = _hash_order(domain, ids)
    # load in small parallel chunks (manual pages render in subprocesses) but consume in
    # hash order, so where the cap stops does not depend on timing
    with ThreadPoolExecutor(max_workers=_LOAD_WORKERS) as pool:
        for start in range(0, len(order), _LOAD_CHUNK):
            if total >= cap:
                break
            chunk = order[start: start + _LOAD_CHUNK]
            for i, loaded in zip(chunk, pool.map(lambda j: candidates[j][1](), chunk)):
                if total >= cap:
                    break
                if loaded is None or not loaded[0].strip():
                    continue
                kept.append((i, ids[i], loaded[0], loaded[1]))
                total += len(loaded[0].encode("utf-8"))
    if not kept:
        raise RuntimeError(f"domain {domain} produced no documents")
    kept.sort()
    lines = []
    for _, doc_id, text, title in kept:
        rec = {"id": doc_id, "text": text} if title is None else {"id": doc_id, "text": text, "title": title}
        lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=True))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with atomic_path(out_dir / f"{domain}.jsonl") as tmp:
        tmp.write_bytes(data)
    return {"file": f"{domain}.jsonl", "bytes": total, "file_bytes": len(data), "n_docs": len(kept),
            "sha256": hashlib.sha256(data).hexdigest()}


def _build_one(domain: str, apt: Optional[_Apt], out_dir: Path, cap: int) -> dict:
    recipe = ALL_DOMAINS[domain]
    roots: dict[str, Path] = {}
    packages: dict[str, str] = {}
    for alternatives in recipe.packages:
        assert apt is not None
        name, deb = apt.fetch(alternatives)
        roots[alternatives[0]] = apt.unpack(deb)
        packages[name] = apt.version(deb)
    entry = _write_domain(out_dir, domain, recipe.extract(roots), cap)
    origin = recipe.origin if recipe.packages else f"{recipe.origin} (Python {platform.python_version()})"
    package = ", ".join(f"{k} {v}" for k, v in packages.items()) or f"python {platform.python_version()}"
    return {**entry, "packages": packages, "package": package, "origin": origin, "titled": recipe.titled}


def _choose_domains(domains: Optional[Sequence[str]], use_apt: bool) -> list[str]:
    if domains is None:
        return list(APT_DOMAINS) if use_apt else list(PYTHON_DOMAINS)
    for d in domains:
        if d not in ALL_DOMAINS:
            raise DataError(f"unknown corpus domain '{d}'{suggest(d, ALL_DOMAINS)}; known: {', '.join(ALL_DOMAINS)}")
        if d in APT_DOMAINS and not use_apt:
            raise DataError(f"domain '{d}' needs apt (Debian packages); drop it or allow apt")
    return list(domains)


def build_corpus(out_dir: Path, *, work_dir: Optional[Path] = None, max_bytes_per_domain: int = 4_000_000,
                 use_apt: bool = True, domains: Optional[Sequence[str]] = None, progress: Progress = None,
                 overwrite: bool = False) -> dict:
    """Build the embedded corpus in ``out_dir`` and return its manifest.

    ``work_dir`` caches downloaded .deb files and their unpacked trees between builds (a
    temporary directory, removed afterwards, when None). With ``domains=None`` every apt
    domain is built; a domain whose packages cannot be had is listed under ``skipped``, and
    when no apt domain succeeds (or apt is missing, or ``use_apt=False``) the Python
    installation's domains are built instead. ``out_dir`` follows the output policy
    (:mod:`proxyscale.store.output`): built beside it and renamed into place, a new or empty
    directory, or (``overwrite``) an earlier corpus proxyscale built there.
    """
    from ..store.output import check_output, output_dir

    if max_bytes_per_domain <= 0:
        raise DataError(f"max_bytes_per_domain must be positive, got {max_bytes_per_domain}")
    log = progress or (lambda msg: None)
    use_apt = use_apt and apt_available()
    chosen = _choose_domains(domains, use_apt)
    check_output(out_dir, overwrite=overwrite)
    tmp_work = None if work_dir is not None else tempfile.TemporaryDirectory(prefix="proxyscale-corpus-")
    work = Path(work_dir) if work_dir is not None else Path(tmp_work.name)  # type: ignore[union-attr]
    try:
        with output_dir(out_dir, overwrite=overwrite) as stage:
            apt = _Apt(work, log) if use_apt else None
            built, skipped = _build_all(chosen, apt, stage, max_bytes_per_domain, log)
            if not built and domains is None:
                log("no apt domain could be built; building from the Python installation")
                built, more = _build_all(list(PYTHON_DOMAINS), None, stage, max_bytes_per_domain, log)
                skipped.update(more)
            if not built:
                raise DataError(f"no corpus domain could be built ({skipped}); check apt-get and disk space")
            manifest = {"format_version": CORPUS_FORMAT_VERSION, "max_bytes_per_domain": max_bytes_per_domain,
                        "builder": "apt" if any(d in APT_DOMAINS for d in built) else "python",
                        "domains": built, "skipped": skipped}
            write_json(stage / MANIFEST, manifest)
    finally:
        if tmp_work is not None:
            tmp_work.cleanup()
    return manifest


def _build_all(chosen: list[str], apt: Optional[_Apt], out_dir: Path, cap: int,
               log: Callable[[str], None]) -> tuple[dict, dict]:
    built: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=_FETCH_WORKERS) as pool:
        warming = apt.prefetch(pool, chosen) if apt is not None else {}
        try:
            for domain in chosen:
                if domain in warming:
                    warming[domain].result()
                _build_domain(domain, apt, out_dir, cap, log, built, skipped)
        finally:
            for f in warming.values():
                f.cancel()
    return built, skipped


def _build_domain(domain: str, apt: Optional[_Apt], out_dir: Path, cap: int, log: Callable[[str], None],
                  built: dict, skipped: dict) -> None:
    """Build one domain into ``built``, or note in ``skipped`` why it could not be."""
    log(f"building domain {domain}")
    try:
        built[domain] = _build_one(domain, apt, out_dir, cap)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            raise  # the output cannot be written: no other domain can be either
        skipped[domain] = str(e)[:300]
        log(f"skipped domain {domain}: {e}")
        return
    log(f"  {domain}: {built[domain]['n_docs']} documents, {built[domain]['bytes']:,} bytes")


def load_manifest(corpus_dir: Path) -> dict:
    """Read ``manifest.json`` of a built corpus (DataError telling how to build one if missing)."""
    path = Path(corpus_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{corpus_dir}: no embedded corpus here (no {MANIFEST}); "
                        f"run `proxyscale corpus build {corpus_dir}` first")
    manifest = read_json(path)
    if manifest.get("format_version") != CORPUS_FORMAT_VERSION:
        raise DataError(f"{path}: corpus format {manifest.get('format_version')} is not "
                        f"{CORPUS_FORMAT_VERSION}; rebuild it with `proxyscale corpus build {corpus_dir}`")
    return manifest


def domain_file(corpus_dir: Path, domain: str, *, verify: bool = False) -> Path:
    """The JSON-lines file of ``domain`` (checked against the manifest's sha256 when ``verify``)."""
    manifest = load_manifest(corpus_dir)
    doms = manifest["domains"]
    if domain not in doms:
        raise DataError(f"{corpus_dir}: corpus has no domain '{domain}'{suggest(domain, doms)}; "
                        f"it has: {', '.join(doms)}")
    path = Path(corpus_dir) / doms[domain]["file"]
    if not path.is_file():
        raise DataError(f"{path} is missing; rebuild with `proxyscale corpus build {corpus_dir}`")
    if verify and hashlib.sha256(path.read_bytes()).hexdigest() != doms[domain]["sha256"]:
        raise DataError(f"{path} does not match its manifest sha256; rebuild with `proxyscale corpus build`")
    return path
