"""landscape_core: loss landscapes of PyTorch models, computed exactly and cached.

The spine: a ``Problem`` (model, loss, data) owns a ``ParamSpace`` in which every point and
direction is a flat vector; one evaluator computes exact full-split values for stacks of
points; results are small dataclasses that carry their settings and cache to disk.
"""

__version__ = "0.1.0"

from .evaluate import Cancelled  # noqa: E402
from .losses import TokenCrossEntropy  # noqa: E402
from .problem import Problem  # noqa: E402
from .results import Surface  # noqa: E402
from .space import ParamKind, ParamSpace  # noqa: E402

__all__ = ["Cancelled", "ParamKind", "ParamSpace", "Problem", "Surface", "TokenCrossEntropy", "__version__"]
