"""Write files so that a failed or interrupted run leaves nothing half-written, and never clobbers one.

A file is written under a hidden temporary name beside its target and published in one step when
complete. The temporary name is also the run's claim on the target:
`.<target name>.<host>-<pid>-<stamp>.partial<suffix>` (host: a short hash of this machine's name,
pid: the writing process, stamp: its creation time in ns, suffix: the target's, for writers that
sniff the format, such as ffmpeg).

- Reserving (`reserved_output`, reserve.py), before the expensive work: with overwrite=False the name
  is refused (FileExistsError) if the target exists or another live run holds a claim on it. Two runs
  that claim at the same instant both see each other; the older claim (stamp, then host and pid) wins.
- Publishing (`atomic_output`, publish.py): with overwrite=False by a hard link, which fails if the
  name exists (`os.replace` would replace it silently); where hard links are not supported (FAT,
  exFAT, some network shares), by creating the name with O_CREAT|O_EXCL and replacing that empty
  placeholder. Should the target appear anyway (a program not using these claims), the result is
  kept under a free name beside it and FileExistsError says where. overwrite=True replaces the
  target (`os.replace`).
- Cleaning (claims.py): each reservation removes, in its folder, the claims of this naming pattern
  left by runs that are gone: written on this machine by a process that no longer exists. Claims of
  another machine (a shared folder) are never removed; one blocks its name until deleted by hand,
  and the error names the file.

signals.py holds SIGINT/SIGTERM over the steps an interrupt must not split; disk_full.py turns any
library's "disk full" into one OSError naming the file. `from flashvideo_core.atomic import <name>`
works for every public name.
"""

from .claims import remove_stale_partials
from .disk_full import DISK_FULL_SIGNS, write_errors_named
from .publish import atomic_output, current_umask
from .reserve import Reservation, reserved_output
from .signals import signals_held

__all__ = [
    "DISK_FULL_SIGNS",
    "Reservation",
    "atomic_output",
    "current_umask",
    "remove_stale_partials",
    "reserved_output",
    "signals_held",
    "write_errors_named",
]
