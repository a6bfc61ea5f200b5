"""torchph's API under the name users import it by (``import corel.pershom as pershom``): a thin
re-export of :mod:`corel.topology.torchph` and of the H0 functions."""

from corel.topology.diagram import H0
from corel.topology.h0 import h0_persistence, h0_persistence_from_distances
from corel.topology.torchph import vr_persistence, vr_persistence_l1, vr_persistence_l2

__all__ = ["H0", "h0_persistence", "h0_persistence_from_distances", "vr_persistence", "vr_persistence_l1",
           "vr_persistence_l2"]
