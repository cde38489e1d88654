"""Lightning callbacks for meta-learning."""

from callbacks.meta_test import MetaTestEvaluation, adaptation_curve

__all__ = ["MetaTestEvaluation", "adaptation_curve"]
