"""A local emulator of the CI batch-job API (``/inventorytriggerjob``): the ground truth for our tests,
benchmarks and the README's demo. Real HTTP on loopback, COS signature checks, a lifecycle on an injected clock,
and seeded faults. See ``server.EmulatorServer`` for the backdoors tests use.
"""

from jobwatch.emulator.clock import Clock, ManualClock, SpeedClock, SystemClock
from jobwatch.emulator.faults import FaultRule
from jobwatch.emulator.server import EmulatorServer, RequestRecord
from jobwatch.emulator.state import STATES, JobView, Lifecycle

__all__ = [
    "Clock",
    "EmulatorServer",
    "FaultRule",
    "JobView",
    "Lifecycle",
    "ManualClock",
    "RequestRecord",
    "STATES",
    "SpeedClock",
    "SystemClock",
]
