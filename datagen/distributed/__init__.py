"""Running a command's model requests on a Ray cluster, through the same ledger, exactly once."""
