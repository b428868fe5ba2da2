"""ckpt: checkpoint and restore Kubernetes pods, CPU and GPU."""

__version__ = "0.1.0"
