"""One module per CLI sub-command; each exposes ``register(subparsers)``."""

import argparse


def add_command(subparsers, name: str, summary: str, description: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` says what it does and shows an example."""
    return subparsers.add_parser(
        name, help=summary, description=description, epilog=f"Example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
