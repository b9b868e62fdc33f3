"""Fault injection for the fault-tolerance test: an env that raises once, mid-episode.

:class:`CrashOnceEnv` is :class:`~rl_isac.rllib.env.ISACMultiAgentEnv` whose ``step`` raises
:class:`InjectedCrash` at its ``crash_at_step``-th step, exactly once per ``marker`` file (the first env that
reaches it creates the file atomically; every later env, including the restarted runner's, runs normally).
It lives in the package (not in the tests) so that remote env runners can import it, as RLlib's own
crashing example envs do. Registered under :data:`CRASH_ENV_NAME`; env_config keys: those of the
wrapped env plus ``crash_marker`` (a path) and ``crash_at_step`` (int >= 1).
"""

from __future__ import annotations

import os

from rl_isac.errors import ConfigError
from rl_isac.rllib.env import ISACMultiAgentEnv

CRASH_ENV_NAME = "rl_isac-cellfree-crash-once-v0"


class InjectedCrash(RuntimeError):
    """The deliberate failure of :class:`CrashOnceEnv`."""


class CrashOnceEnv(ISACMultiAgentEnv):
    """:class:`ISACMultiAgentEnv` that raises :class:`InjectedCrash` once (see the module docstring)."""

    def __init__(self, config: dict | None = None) -> None:
        config = dict(config or {})
        self._marker = config.pop("crash_marker", None)
        self._crash_at = config.pop("crash_at_step", 3)
        if not self._marker:
            raise ConfigError("env_config.crash_marker", self._marker, "a file path is required")
        if not (isinstance(self._crash_at, int) and self._crash_at >= 1):
            raise ConfigError("env_config.crash_at_step", self._crash_at, "must be an int >= 1")
        super().__init__(config)
        self._steps = 0

    def step(self, action_dict):
        self._steps += 1
        if self._steps == self._crash_at:
            try:
                fd = os.open(self._marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # the one crash already happened elsewhere
            else:
                os.close(fd)
                raise InjectedCrash(f"injected env crash at step {self._steps} (marker {self._marker})")
        return super().step(action_dict)


def register() -> str:
    """Register :class:`CrashOnceEnv` with Ray Tune's registry under :data:`CRASH_ENV_NAME`."""
    from ray.tune.registry import register_env

    register_env(CRASH_ENV_NAME, lambda config: CrashOnceEnv(dict(config)))
    return CRASH_ENV_NAME
