"""The kopf operator that reconciles Checkpoint resources."""
