"""``python -m controlplane`` is the ``bourse`` command."""

from controlplane.cli import main

raise SystemExit(main())
