"""gan: DCGAN training and controlled ablations in JAX/Flax."""
