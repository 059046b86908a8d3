"""Sizing a config at paper scale without its hardware: every network a production config builds, at full size
(parameters, FLOPs per forward, activation memory), proofs that it trains, round-trips and scores on this machine, and
the capacity plan (`meddiff plan`) that projects it onto GPUs."""
