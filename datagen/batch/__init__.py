"""`rlaif batch`: OpenAI Batch API input files run against any compatible endpoint, exactly once."""
