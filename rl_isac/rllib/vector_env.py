"""An env runner whose envs step together: :class:`ISACEnvRunner` and its vector env :class:`ISACVectorEnv`.

RLlib 2.60 vectorises a ``MultiAgentEnv`` synchronously (``SyncVectorMultiAgentEnv``: a Python loop calling
each env's ``step``). :class:`ISACVectorEnv` is that vector env with one change: the envs that step (not the
ones being auto-reset) step in one call of :func:`rl_isac.rllib.env.step_envs`, which runs the worlds
(:func:`rl_isac.vector_network.step_networks`), the PCRB bookkeeping and the observations' pair geometry and
Fisher information once over all the envs' targets, and the windows' EKF anchors in one batched EKF update
(:meth:`~rl_isac.tracking.window.MeasurementWindow.push_many`, :func:`rl_isac.tracking.ekf.update_many`). The
same numbers as the loop, bit for bit (``tests/rllib/test_vector_env.py``): same observations, rewards,
infos, world seeds and auto-resets, so a run with the same config and seed samples the same episodes.
The auto-reset rule (``next_step``) and the returned containers are the parent's; the observations are not
deep-copied (our envs allocate fresh arrays every step and never write to them again).

:class:`ISACEnvRunner` is RLlib's ``MultiAgentEnvRunner`` whose ``make_env`` builds that vector env (its
sub-envs are created by RLlib exactly as before; the vector object's class is :class:`ISACVectorEnv`);
:func:`rl_isac.rllib.config.build_ppo_config` selects it.
"""

from __future__ import annotations

from copy import deepcopy

import numpy as np
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.env.vector.sync_vector_multi_agent_env import SyncVectorMultiAgentEnv

from rl_isac.rllib.env import ISACMultiAgentEnv, step_envs


class ISACVectorEnv(SyncVectorMultiAgentEnv):
    """``SyncVectorMultiAgentEnv`` whose stepping envs step in one :func:`~rl_isac.rllib.env.step_envs` call
    (sub-envs that are not :class:`~rl_isac.rllib.env.ISACMultiAgentEnv` step one by one, as the parent does)."""

    def step(self, actions):
        if self.autoreset_mode != "next_step":
            raise ValueError(f"Unexpected autoreset mode: {self.autoreset_mode}")
        stepping = []
        for i in range(self.num_envs):
            if self._autoreset_envs[i]:  # the parent's auto-reset of an env that terminated or truncated
                agents = self.envs[i].unwrapped.possible_agents
                self._observations[i], self._infos[i] = self.envs[i].reset()
                self._rewards[i] = {aid: 0.0 for aid in agents}
                self._terminations[i] = {aid: False for aid in agents}
                self._truncations[i] = {aid: False for aid in agents}
                self._terminations[i].update({"__all__": False})
                self._truncations[i].update({"__all__": False})
            else:
                stepping.append(i)
        ours = all(isinstance(e.unwrapped, ISACMultiAgentEnv) for e in self.envs)
        if stepping:
            envs = [self.envs[i].unwrapped for i in stepping]
            if ours:
                results = step_envs(envs, [actions[i] for i in stepping])
            else:
                results = [self.envs[i].step(actions[i]) for i in stepping]
            for i, r in zip(stepping, results):
                (self._observations[i], self._rewards[i], self._terminations[i], self._truncations[i],
                 self._infos[i]) = r
        self._autoreset_envs = np.logical_or(
            np.array([t["__all__"] for t in self._terminations]),
            np.array([t.get("__all__", False) for t in self._truncations]))
        # our envs return freshly allocated observation arrays every step and never touch them again: the
        # parent's deep copy (protection against envs that reuse their buffers) is skipped for them
        copy = self.copy and not ours
        return (deepcopy(self._observations) if copy else list(self._observations), np.copy(self._rewards),
                np.copy(self._terminations), np.copy(self._truncations), np.copy(self._infos))


class ISACEnvRunner(MultiAgentEnvRunner):
    """RLlib's ``MultiAgentEnvRunner`` with :class:`ISACVectorEnv` as its vector env."""

    def make_env(self):
        super().make_env()
        if type(self.env) is SyncVectorMultiAgentEnv:
            # the same object (sub-envs, spaces, state), stepped by the subclass: it adds no attribute
            self.env.__class__ = ISACVectorEnv
