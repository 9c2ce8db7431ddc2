"""The kernel: experiment, orchestrator, sinks, plugin interfaces and registry."""
