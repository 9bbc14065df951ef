"""Verifiable constraints: the kinds, their checkers, prompts that carry them, the verifier
judge."""
