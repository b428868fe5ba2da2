"""The custom resources (ckpt.dev/v1alpha1): one pydantic model each, the single source of its
schema, and the generators of the CRDs in crds/ (`make crd`).

Every other package may import these; they import nothing of ckpt's but each other.
"""
