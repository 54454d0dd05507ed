"""flight_profiler's command word for profile (`perf -d 5 -f x.svg`): the CLI loads only the tool
module named like the command, so this name makes `perf` start as fast as `profile`."""
from .profile import TOOL  # noqa: F401
