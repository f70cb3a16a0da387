"""Sample-quality evaluation: the FID Inception network and the metrics built on it.

- :func:`inception_features` / :class:`InceptionExtractor`: uint8 images of any size ->
  pool_3 features (FID, precision/recall), spatial mixed_6 features (sFID) and logits
  (Inception Score), with TensorFlow-2015 Inception weights run in PyTorch.
- :func:`fid`, :func:`inception_score`, :func:`precision_recall`: the metrics.
"""

from diffuse.eval.features import InceptionActivations, InceptionExtractor, inception_features
from diffuse.eval.metrics import (
    GaussianStatistics,
    fid,
    frechet_distance,
    inception_score,
    precision_recall,
)

__all__ = [
    "GaussianStatistics",
    "InceptionActivations",
    "InceptionExtractor",
    "fid",
    "frechet_distance",
    "inception_features",
    "inception_score",
    "precision_recall",
]
