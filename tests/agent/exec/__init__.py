"""Tests of servermanager.agent.exec."""
