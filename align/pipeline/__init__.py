"""`rlaif run` and `rlaif demo`: pipeline files of `rlaif` commands, run stage by stage."""
