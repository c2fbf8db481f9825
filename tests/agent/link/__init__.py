"""Tests of servermanager.agent.link."""
