"""Development and test environment helpers: real runc containers for tests, demos, benches."""
