"""What passes between ckpt's components: the node agent's and the checkpoints API's wire
schemas, the annotation and label names they agree on, and the clients that speak them.

The operator, the agent, the API and the user CLI each import this package and never each other.
"""
