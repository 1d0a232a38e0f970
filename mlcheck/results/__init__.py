"""A run's results: the schema, building them from pytest, merging, digests, failure kinds."""
