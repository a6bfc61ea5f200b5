"""Detection: the one detector contract, image conversion, the branched autoencoder, the backbone
file format, the one-class detector and the baselines.

Builds on :mod:`corel.topology` only; :mod:`corel.detection.baselines` is imported on demand.
"""

from corel.detection.backbone import Backbone, pretrained
from corel.detection.base import BaseDetector
from corel.detection.detector import OneClassDetector, count_within
from corel.detection.models import AutoencoderConfig, BlockLinear, BranchedAutoencoder

__all__ = ["AutoencoderConfig", "Backbone", "BaseDetector", "BlockLinear", "BranchedAutoencoder", "OneClassDetector",
           "count_within", "pretrained"]
