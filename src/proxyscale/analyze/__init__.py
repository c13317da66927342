"""Analysis: pure functions over result tables (numpy + pandas; no torch).

- :mod:`.stats`: correlations, decision accuracy, partial correlation, permutation tests,
  seed bootstraps.
- :mod:`.ngram`: count n-gram models, the zero-compute proxies.
- :mod:`.correlate`: :func:`analyze_study`, the small-to-large tables.
- :mod:`.extrapolate`: fitting loss against compute across the proxy ladder.
- :mod:`.io`: :func:`write_analysis` / :func:`read_analysis`.
"""
from .correlate import analyze_study
from .io import read_analysis, write_analysis
from .ngram import NGramModel, fit_ngram, load_ngram, save_ngram, score_test_set

__all__ = ["analyze_study", "read_analysis", "write_analysis", "NGramModel", "fit_ngram", "load_ngram",
           "save_ngram", "score_test_set"]
