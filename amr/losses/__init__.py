"""Training objectives: the DETR set criterion and the report's auxiliary terms."""
from amr.losses.criterion import SetCriterion

__all__ = ["SetCriterion"]
