"""Tests of the benchmark parts."""
