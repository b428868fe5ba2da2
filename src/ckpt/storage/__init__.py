"""Storage locations shared by the operator and the agent: models, object access, encryption."""
