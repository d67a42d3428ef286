"""Running cases: the session's shared state, the scheduling of rounds, the assembly of a
result, and the estimate of a selection's time from stored baselines."""
