from sbts.cli.main import main

__all__ = ["main"]
