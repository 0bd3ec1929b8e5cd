"""The training floor (docs/architecture.md)."""
import models  # noqa: F401  (TensorFlow's CPU kernel choice is made there, before any Keras import below)
