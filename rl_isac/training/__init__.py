"""Training: phase 1 supervised pre-training of the DGNN (:mod:`.pretrain`) and phase 2 PPO.

Light on purpose: import the submodules you need (``from rl_isac.training.pretrain import pretrain``);
importing this package loads neither torch nor Ray.
"""
