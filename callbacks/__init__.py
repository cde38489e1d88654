"""Lightning callbacks for meta-learning."""

from callbacks.adaptation import AdaptationCurve, EpisodeGrid, MetaProgressBar, plot_adaptation_curves, plot_episode
from callbacks.meta_test import MetaTestEvaluation, adaptation_curve, adaptation_curves

__all__ = [
    "AdaptationCurve",
    "EpisodeGrid",
    "MetaProgressBar",
    "MetaTestEvaluation",
    "adaptation_curve",
    "adaptation_curves",
    "plot_adaptation_curves",
    "plot_episode",
]
