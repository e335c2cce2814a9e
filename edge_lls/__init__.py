"""edge-lls: on-device training with the LLS local learning rule."""
__version__ = "0.1.0"
