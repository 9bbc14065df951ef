"""`rlaif serve`: the embedded default model and any local checkpoint behind an OpenAI-compatible
API."""
