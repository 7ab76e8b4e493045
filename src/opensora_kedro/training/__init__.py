"""Training-loop support that does not depend on Kedro: state serialisation, RNG capture,
atomic checkpoints, EMA weights and Open-Sora's learning-rate schedule."""
