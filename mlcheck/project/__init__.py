"""The project under test: its manifest, lock, weights on disk and their verification."""
