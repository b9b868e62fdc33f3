"""CUs (the paper's CPU): estimator + associator + beam selector compositions and their registry."""

from rl_isac.controllers.base import Controller, CUAction, Estimator
from rl_isac.controllers.composed import ComposedCU, GeometricBeams, NearestAssociation
from rl_isac.controllers.registry import METHODS, make_controller

__all__ = ["CUAction", "ComposedCU", "Controller", "Estimator", "GeometricBeams", "METHODS", "NearestAssociation",
           "make_controller"]
