"""Learning rules: the LLS family, its baselines, and the registry commands use."""
from __future__ import annotations

from ..errors import ConfigError
from .base import Rule, StepStats
from .bp import BP
from .dfa import DFA
from .lls import lls_loss
from .local import LLS, LLSM, LLSMxM, LLSRandom, LocalLosses

RULES = {cls.name: cls for cls in (LLS, LLSM, LLSMxM, LLSRandom, LocalLosses, DFA, BP)}
LOCAL_RULES = {name for name, cls in RULES.items() if cls.mode == "local"}


def make_rule(name: str, **options) -> Rule:
    """make_rule('lls', waveform='square', temperature=0.5). Options a rule does not use
    (e.g. a waveform for BP) are ignored."""
    if name not in RULES:
        raise ConfigError(f"unknown rule {name!r}; choose one of: {', '.join(RULES)}")
    cls = RULES[name]
    if cls.mode == "local":
        return cls(**options)
    return cls()


__all__ = ["RULES", "LOCAL_RULES", "make_rule", "lls_loss", "Rule", "StepStats",
           "LLS", "LLSM", "LLSMxM", "LLSRandom", "LocalLosses", "DFA", "BP"]
