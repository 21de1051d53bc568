"""``python -m acula ...`` is the ``acula`` command."""

from acula.service.cli import main

main()
