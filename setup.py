"""gan: DCGAN ablations in JAX/Flax (see README.md)."""
from setuptools import find_packages, setup

setup(
    name="gan",
    version="0.1.0",
    description="DCGAN training and controlled ablations in JAX/Flax",
    packages=find_packages(include=["gan", "gan.*"]),
    python_requires=">=3.10",
    install_requires=[
        # Lower bounds are the versions this code was developed and tested with.
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml-collections>=1.1.0",
        "absl-py>=2.3",
        "numpy>=2.0",
        "scipy>=1.13",
        "pillow>=10.0",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        # Only imported when no local IDX folder is configured.
        "tensorflow-datasets>=4.9.6",
    ],
    extras_require={
        "test": ["pytest>=8.0"],
        # tfds.load reads TFRecords through TensorFlow.
        "tfds": ["tensorflow-cpu>=2.16", "importlib_resources"],
    },
)
