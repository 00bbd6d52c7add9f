"""Pinned, calibrated evaluation of generated images (issue 3); `suite` is the entry point."""
from gan.evaluation.suite import evaluate_generator, evaluate_images, real_floor

__all__ = ["evaluate_generator", "evaluate_images", "real_floor"]
