"""One module per command of run_bridge.py (see bridge/cli.py)."""
