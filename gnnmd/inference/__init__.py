"""A trained model in use: its force function for one system, and its errors on a dataset.
Nothing here imports training."""

from gnnmd.inference.evaluate import evaluate_checkpoint, evaluate_model
from gnnmd.inference.forces import ModelForces, WithCoulomb, check_types_known, with_coulomb
from gnnmd.inference.metrics import ForceMetrics, type_labels

__all__ = [
    "ForceMetrics",
    "ModelForces",
    "WithCoulomb",
    "check_types_known",
    "evaluate_checkpoint",
    "evaluate_model",
    "type_labels",
    "with_coulomb",
]
