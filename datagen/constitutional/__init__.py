"""Constitutional AI critique and revision (SL-CAI) over red-team prompts."""
