"""Test helpers for converge and its plugins, and the plugin conformance suite.

    from converge.testing import PluginConformance

    class TestMyPlugin(PluginConformance):
        overrides = ["data=mine/small", "model=mine/net"]

pytest then trains, resumes and evaluates your task through the real
composition, Trainer and checkpoint code, in a few seconds.
"""

from converge.testing.compose import compose, run_cli
from converge.testing.conformance import PluginConformance

__all__ = ["PluginConformance", "compose", "run_cli"]
