"""`rlaif report`: the self-contained HTML project report and dataset cards."""
