"""Tests of the issue-7 benchmark harness (benchmarks/)."""
