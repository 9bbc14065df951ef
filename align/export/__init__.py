"""`rlaif export`: stored rows and labelled pairs as TRL-format training datasets."""
