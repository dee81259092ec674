"""Cross-service tests. Integration tests talk to the real servers of deploy/local (see integration/)."""
