"""Helpers shared by the test tiers (tests/unit, tests/loopback, tests/integration)."""
