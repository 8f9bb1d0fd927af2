"""`stealkit` command line. Each command group lives in its own module and registers on `app`."""

import importlib

from stealkit.cli.app import app

# One module per group of commands; each decorates functions with @app.command / adds sub-apps.
for _module in ("data_cmds", "models_cmds", "list_cmds", "train_cmds", "steal_cmds", "serve_cmds", "verify_cmds", "remote_cmds"):
    importlib.import_module(f"stealkit.cli.{_module}")

__all__ = ["app"]
