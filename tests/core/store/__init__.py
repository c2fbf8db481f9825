"""Tests of servermanager.core.store."""
