"""Data attribution: TRAK (this package's trak/projectors/kernel/features modules) and the
datamodel / LDS ground truth that evaluates it.

Main entry points::

    from proxyscale.attribute import TRAK, trak_scores, grad_dot_scores
"""
from .outputs import ClassificationMargin, LMLogOdds, OutputFunction, get_output
from .projectors import PROJECTORS, Projector, make_projector
from .trak import TRAK, TRAKConfig, grad_dot_scores, trak_scores

__all__ = ["TRAK", "TRAKConfig", "trak_scores", "grad_dot_scores", "OutputFunction", "ClassificationMargin",
           "LMLogOdds", "get_output", "Projector", "PROJECTORS", "make_projector"]
