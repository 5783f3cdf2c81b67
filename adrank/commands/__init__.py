"""Bodies of ``adrank`` sub-commands that live outside :mod:`adrank.cli`.

Each module here registers its commands on :data:`adrank.cli.app` when imported; ``cli.py``
imports them at its end. Keeping each command family in its own module keeps ``cli.py``
readable and lets independent features add commands without touching each other's code.
"""
