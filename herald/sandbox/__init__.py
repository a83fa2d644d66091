"""The provider sandbox: a local HTTP emulator of every network Herald publishes to.

Start it with :func:`run_in_thread` (tests, demo) or :func:`main` (``herald sandbox``); drive
it with :class:`SandboxClient`. How a network plugs in: :mod:`herald.sandbox.core`.
"""

from herald.sandbox.client import SandboxClient
from herald.sandbox.server import SandboxServer, main, run_in_thread

__all__ = ["SandboxClient", "SandboxServer", "main", "run_in_thread"]
