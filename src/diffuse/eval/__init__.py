"""Sample-quality evaluation: the FID Inception network and the metrics built on it.

- :func:`inception_features` / :class:`InceptionExtractor`: uint8 images of any size ->
  pool_3 features (FID, precision/recall), spatial mixed_6 features (sFID) and logits
  (Inception Score), with TensorFlow-2015 Inception weights run in PyTorch.
- :func:`fid`, :func:`kid`, :func:`inception_score`, :func:`precision_recall`: the metrics.
- :func:`load_samples`, :func:`reference_images`: the images ``diffuse eval`` reads for
  its samples and its reference, so that these functions give the command's numbers.
"""

from diffuse.eval.features import InceptionActivations, InceptionExtractor, inception_features
from diffuse.eval.metrics import (
    GaussianStatistics,
    fid,
    frechet_distance,
    inception_score,
    kid,
    precision_recall,
)
from diffuse.eval.reference import reference_images
from diffuse.eval.samples import load_samples

__all__ = [
    "GaussianStatistics",
    "InceptionActivations",
    "InceptionExtractor",
    "fid",
    "frechet_distance",
    "inception_features",
    "inception_score",
    "kid",
    "load_samples",
    "precision_recall",
    "reference_images",
]
