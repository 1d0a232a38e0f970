"""Distributed tests on CPU processes: launching N ranks, and one rank's side."""
