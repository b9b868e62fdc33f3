"""The RLlib application (new API stack, ``ray[rllib]==2.60``): phase 2 of the paper (Sec. 3.2-3.3).

=====================  ==========================================================================
:mod:`.env`            :class:`~.env.ISACMultiAgentEnv`, one agent per CU cluster (``cu_0``, ...)
:mod:`.mask`           torch twin of :func:`rl_isac.association.valid_action_mask` (STOP token)
:mod:`.distribution`   :class:`~.distribution.MaskedARDistribution`, J masked categoricals
:mod:`.module`         :class:`~.module.ISACPPOModule`, frozen DGNN + auto-regressive actor eq. (11) + critic
:mod:`.callbacks`      TensorBoard scalars (``tracking/*``, ``assoc/*``, ``phy/*``, ``perf/*``)
:mod:`.config`         :func:`~.config.build_ppo_config` and the validated :class:`~.config.PPOTrainConfig`
:mod:`.controller`     the ``dgnn-ppo`` CU (a trained module in the harness, without Ray)
=====================  ==========================================================================

Nothing here is imported by the lower layers; importing this package imports neither ray nor torch.
"""
