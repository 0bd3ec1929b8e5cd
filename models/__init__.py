"""The models floor: classifiers, their artifacts and the shared preprocessing (docs/architecture.md)."""
import os

# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX-512 VNNI/BF16 or AMX; elsewhere, as
# on this project's 2-core AVX2 machines, it falls back to Eigen, whose one-channel 5x5 stride-2 convolution ran
# radio-first's first layer ~4x slower and its whole network ~2.2x slower (docs/models.md, "CPU kernels"). Set
# here, before anything imports TensorFlow or Keras; TF_ENABLE_ONEDNN_OPTS=0 in the environment, or
# models.onednn=false for the CLI, keeps Eigen.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
