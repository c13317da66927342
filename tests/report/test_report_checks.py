"""The small-to-large report warns before it concludes: sanity flags, the smallest-proxy rule,
interval-based comparisons, captions that describe what is drawn, and the metric comparison."""
import math

import numpy as np
import pandas as pd

from proxyscale.analyze import analyze_study
from proxyscale.analyze.synthetic import make_synthetic_study
from proxyscale.studies.scaling.checks import metric_finding
from proxyscale.studies.scaling.ladder_sections import beats_text
from proxyscale.studies.scaling.report import _context, _fig2_caption, _methods, _signal, study_sections


def _tables(losses: dict[str, np.ndarray], flops: dict[str, float], vocab: int = 100):
    """Results from per-(seed, distribution) losses (2 examples each, ±0.05 around the mean)."""
    n_seeds, n_dist = next(iter(losses.values())).shape
    dists = [f"d{i:02d}" for i in range(n_dist)]
    rows = [("t", f"e{e}", dists[d], m, s, float(mat[s, d]) + (0.05 if e else -0.05))
            for m, mat in losses.items() for s in range(n_seeds) for d in range(n_dist) for e in range(2)]
    res = pd.DataFrame(rows, columns=["test_set", "example_id", "distribution", "model", "seed", "loss"])
    ref = max(flops, key=flops.get)
    models = pd.DataFrame([{"model": m, "kind": "neural", "params": int(f), "train_tokens": 0, "flops": f,
                            "is_reference": m == ref, "vocab_size": vocab} for m, f in flops.items()])
    return (res, models, pd.DataFrame({"distribution": dists, "sources": [["web"]] * n_dist}),
            pd.DataFrame([{"test_set": "t", "kind": "lm", "source": None}]))


def _md(sections, title: str) -> str:
    return next(s.markdown for s in sections if s.title == title)


def test_a_reference_that_has_not_learned_is_flagged_not_concluded():
    rng = np.random.default_rng(0)
    ref = math.log(100) + 0.02 * rng.normal(size=(2, 10))  # uniform over 100 tokens, seed noise only
    a = analyze_study(*_tables({"R": ref, "P": ref + 0.01 * rng.normal(size=(2, 10))}, {"R": 10.0, "P": 1.0}),
                      seed=0, n_boot=20)
    assert not a["sanity_reference"]["trust"].iloc[0]
    sections = study_sections(a)
    findings = _md(sections, "Key findings")
    line = next(ln for ln in findings.splitlines() if ln.startswith("- t "))
    assert "not a finding — the reference has not learned" in line and "cannot be told apart" in line
    assert "R² ≥" not in line and "add signal" not in line  # no conclusion drawn from it
    assert "Read with care: on 1 of 1 test sets (t)" in _md(sections, "Overview")
    assert "its loss" in _md(sections, "Sanity checks") and "(!)" in _md(sections, "Sanity checks")
    assert _md(sections, "Summary").startswith("> Not findings: the t column(s)")
    titles = [s.title for s in sections]
    assert titles[:3] == ["Overview", "Sanity checks", "Key findings"] and titles[-1] == "Methods and inputs"


def test_smallest_proxy_finding_needs_every_larger_proxy_to_pass():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 12))
    losses = {"R": q, "L1": q + 0.05 * rng.normal(size=q.shape), "L2": q + 2.0 * rng.normal(size=q.shape),
              "L3": q + 0.05 * rng.normal(size=q.shape)}
    a = analyze_study(*_tables(losses, {"R": 1000.0, "L1": 1.0, "L2": 10.0, "L3": 100.0}), seed=0, n_boot=20)
    r2 = a["summary"].set_index("model")["r2"]
    assert r2["L1"] >= 0.9 > r2["L2"] and r2["L3"] >= 0.9  # the constructed pass / fail / pass
    sections = study_sections(a)
    line = next(ln for ln in _md(sections, "Key findings").splitlines() if ln.startswith("- t "))
    assert "whose larger siblings all pass too: L3 (10.0× less compute)" in line
    assert "L1 also reaches it, but the larger L2 do(es) not, so it is no safe choice" in line
    assert "| t | R² | 0.900 | L3 |" in _md(sections, "Smallest sufficient proxy")


def test_figure2_caption_names_the_ceiling_only_when_it_is_drawn():
    t = make_synthetic_study(np.random.default_rng(0), n_examples=3)
    many = _fig2_caption(_context(analyze_study(*t, seed=0, n_boot=20)))
    assert "dotted: reference ceiling" in many
    res = t[0][~((t[0]["model"] == "L4d96") & (t[0]["seed"] > 0))]
    one = _fig2_caption(_context(analyze_study(res, *t[1:], seed=0, n_boot=20)))
    assert "dotted" not in one and "No ceiling line: with one reference seed" in one


def test_beats_needs_the_paired_interval_above_zero():
    assert beats_text(0.002, -0.01, 0.015) == "no clear difference: Δ +0.002 [-0.010, +0.015]"
    assert beats_text(0.1, 0.05, 0.2) == "yes: Δ +0.100 [+0.050, +0.200]"
    assert beats_text(-0.1, -0.2, -0.05) == "no, worse: Δ -0.100 [-0.200, -0.050]"
    assert beats_text(0.002, math.nan, math.nan) == "no interval"


def _decisions(diffs: list[tuple[float, float, float]]) -> pd.DataFrame:
    rows = [{"test_set": f"t{i}", "model": "small", "metric": "correct_prob", "continuous": True,
             "decision_accuracy": 0.8, "decision_accuracy_lo": 0.7, "decision_accuracy_hi": 0.9,
             "diff_vs_accuracy": d, "diff_lo": lo, "diff_hi": hi} for i, (d, lo, hi) in enumerate(diffs)]
    rows.append({**rows[0], "metric": "accuracy", "continuous": False, "diff_vs_accuracy": math.nan,
                 "diff_lo": math.nan, "diff_hi": math.nan})
    return pd.DataFrame(rows)


def test_the_metric_finding_is_read_from_the_paired_intervals():
    holds = metric_finding({"metric_decisions": _decisions([(0.2, 0.1, 0.3), (0.1, 0.02, 0.2), (0.0, -0.1, 0.1)])},
                           ["big", "small"])
    assert "in 2 of 3 comparisons the paired interval" in holds and "in 0 below 0" in holds
    assert "DataDecide's finding (continuous metrics decide better at small scale) holds here" in holds
    fails = metric_finding({"metric_decisions": _decisions([(-0.2, -0.3, -0.1), (0.0, -0.1, 0.1)])}, ["big", "small"])
    assert "does not hold here: accuracy decided better" in fails
    unclear = metric_finding({"metric_decisions": _decisions([(0.0, -0.1, 0.1)])}, ["big", "small"])
    assert "does not show DataDecide's finding either way" in unclear
    assert metric_finding({"metric_decisions": _decisions([(0.2, 0.1, 0.3)])}, ["small", "big"]) == ""  # big only


def test_methods_say_why_the_holm_family_has_the_ngram_tests():
    a = analyze_study(*make_synthetic_study(np.random.default_rng(2), n_examples=3), seed=0, n_boot=20)
    c = _context(a)
    assert "includes the tests of the other n-gram baselines against the best n-gram" in _methods(c).markdown
    assert "The family includes the rows of the other n-gram baselines" in _signal(c).markdown
