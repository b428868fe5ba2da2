"""The development harness: local control plane and cluster, runc containers, the stack of ckpt
processes, the demo. It lives outside ``src/`` so that the wheel and the images never carry it;
pytest finds it through ``pythonpath`` and ``make demo`` runs it from the repository root."""
