"""Helpers shared by tests, benchmarks and fixture builders."""
