"""CU estimators: classical EKF multi-BS fusion (and, elsewhere in this package, the learned DGNN).

This module stays light: it imports numpy-only code (no torch, no Ray), so
``import rl_isac.tracking`` is cheap. Learned estimators import torch in their own modules.
"""

from rl_isac.tracking.ekf import (
    EKFEstimator,
    EKFSettings,
    predict,
    range_angle,
    range_angle_jacobian,
    update_range_angle,
    update_speed,
    wrap_angle,
)
from rl_isac.tracking.motion import (
    PROCESS_NOISE_MODELS,
    cv_transition,
    heading_step_moments,
    process_noise,
    reflect_into_area,
    velocity_noise_var,
)

__all__ = [
    "EKFEstimator",
    "EKFSettings",
    "PROCESS_NOISE_MODELS",
    "cv_transition",
    "heading_step_moments",
    "predict",
    "process_noise",
    "range_angle",
    "range_angle_jacobian",
    "reflect_into_area",
    "update_range_angle",
    "update_speed",
    "velocity_noise_var",
    "wrap_angle",
]
