"""Study kinds: one folder each (spec, plan from shared fragments, steps, analysis, report),
behind the :class:`~proxyscale.studies.base.Study` protocol and its registry. Importing this
package registers the kinds shipped with proxyscale."""
from . import attribution, scaling, selection, suite  # noqa: F401  (each registers itself)
from .base import STUDIES, Study, finished_analysis, load_study, register_study, study_of

__all__ = ["STUDIES", "Study", "finished_analysis", "load_study", "register_study", "study_of"]
