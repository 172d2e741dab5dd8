"""``python -m app.cli``: the ``hookbin`` command."""

from app.cli import main

main()
