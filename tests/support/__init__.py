"""Helpers shared by tests: local servers and fakes that run on 127.0.0.1 only."""
