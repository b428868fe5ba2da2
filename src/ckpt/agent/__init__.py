"""The node agent: dumps and restores containers with CRIU and streams archives to storage."""
