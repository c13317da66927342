"""Study kinds: one folder each (spec, plan from shared fragments, steps, analysis, report),
behind the :class:`~proxyscale.studies.base.Study` protocol and its registry."""
from .base import STUDIES, Study, load_study, register_study, study_of

__all__ = ["STUDIES", "Study", "load_study", "register_study", "study_of"]
