"""Tests of lit_codec.tokenizers.

Not named tests/tokenizers: scripts run from tests/ (ddp_equivalence_script.py) have tests/ on
sys.path first and would import it instead of Hugging Face's `tokenizers` package.
"""
