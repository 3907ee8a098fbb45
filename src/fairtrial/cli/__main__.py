"""``python -m fairtrial.cli``: the ``fairtrial`` command."""

from fairtrial.cli import main

if __name__ == "__main__":
    main()
