"""The learner's code forms before 2026-12-04, for the A/B scripts beside this file (learner_minibatch_ab.py,
learner_ab_rllib.py): ``BEFORE_TRAIN_LOGITS`` (the teacher-forced pass with the ``baddbmm(ctx_e, h^T)`` bilinear
term, built from the shipped source with that one line put back) and ``PLAIN_PROBS`` (the distribution's plain
``exp`` of the log-probabilities); ``use(train_logits, probs)`` sets the forms the module and distribution classes
call, ``SHIPPED`` the shipped pair."""
import inspect
import textwrap

import rl_isac.rllib.distribution as distmod
import rl_isac.rllib.module as modmod

SHIPPED = (modmod.ISACPPOModule.train_logits, distmod.MaskedARDistribution.probs)
_LINE = "bilinear = torch.bmm(h, ctx_e.transpose(1, 2)).transpose(1, 2) + (ctx @ be)[..., None]"
_src = textwrap.dedent(inspect.getsource(SHIPPED[0]))
if _LINE not in _src:
    raise SystemExit(f"the shipped train_logits no longer has the line this A/B replaces: {_LINE}")
_ns = dict(vars(modmod))
exec(_src.replace(_LINE, "bilinear = torch.baddbmm((ctx @ be)[..., None], ctx_e, h.transpose(1, 2))"), _ns)
BEFORE_TRAIN_LOGITS = _ns["train_logits"]
PLAIN_PROBS = property(lambda self: self.log_probs.exp())


def use(train_logits, probs) -> None:
    """Make every ISACPPOModule / MaskedARDistribution of this process use these forms."""
    modmod.ISACPPOModule.train_logits, distmod.MaskedARDistribution.probs = train_logits, probs
