"""meter-gateway: the smart-meter edge gateway daemon and its tools.

structlog imports ``rich`` at its own import whenever rich is installed (``structlog.dev`` and
``structlog.tracebacks`` try it for pretty tracebacks), and rich's console machinery costs about
4.5 MiB of resident memory (measured on ``import gateway.daemon``). This gateway never renders
through rich (``gateway.logs`` configures plain tracebacks, as a box without rich has), yet a
venv that has rich for other reasons (the development tools pull it in) paid for it in every
process. So structlog is imported here, first, with ``sys.modules["rich"] = None`` for the
duration of that one import: the import system then raises ImportError for ``import rich``,
which structlog handles as "not installed". The entry is removed straight after, so anything
else in the process can still import rich.
"""

from __future__ import annotations

import sys

if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    except ImportError:  # a bare interpreter using a standalone module (the port lock's check runs that way)
        pass
    finally:
        del sys.modules["rich"]
