"""The learned CU estimator of the paper (Sec. 3.1) and its beam head (Sec. 3.2): torch + PyG, no Ray.

* :mod:`.layers`: the Spatial Attention Module layer, eqs. (6)-(8), a PyG ``MessagePassing``.
* :mod:`.model`: :class:`DGNN` (SAM + TAM, eq. (9), + beam head, eq. (12)), :class:`DGNNConfig`,
  :func:`beams_from_logits`.
"""

from rl_isac.tracking.dgnn.layers import SpatialAttentionLayer, dense_to_edges
from rl_isac.tracking.dgnn.model import DGNN, DGNNConfig, beams_from_logits, to_tensors

__all__ = ["DGNN", "DGNNConfig", "SpatialAttentionLayer", "beams_from_logits", "dense_to_edges", "to_tensors"]
