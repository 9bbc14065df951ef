"""Sampled responses and the response pairs that judges and annotators label."""
