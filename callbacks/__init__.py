"""Lightning callbacks for meta-learning, and the figures they draw."""

from callbacks.adaptation_curve import AdaptationCurve
from callbacks.episode_grid import EpisodeGrid, plot_episode
from callbacks.meta_test import MetaTestEvaluation
from callbacks.plotting import plot_adaptation_curves, plot_episode_predictions
from callbacks.progress_bar import MetaProgressBar

__all__ = [
    "AdaptationCurve",
    "EpisodeGrid",
    "MetaProgressBar",
    "MetaTestEvaluation",
    "plot_adaptation_curves",
    "plot_episode",
    "plot_episode_predictions",
]
