"""``google.colab.drive.mount``: Google Drive appears at ``<mountpoint>/MyDrive``.

Real Colab asks the user to allow access, then FUSE-mounts Drive; here ``$COLAB_STANDIN_DRIVE`` (default: a
``standin-drive`` folder beside the mountpoint) is linked there, so what one "runtime" writes the next one finds.
"""

import os
from pathlib import Path

mounts: list[str] = []


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    point = Path(mountpoint)
    my_drive = point / "MyDrive"
    if my_drive.exists() and not force_remount:
        print(f'Drive already mounted at {point}; to attempt to forcibly remount, call '
              f'drive.mount("{point}", force_remount=True).')
        return
    backing = Path(os.environ.get("COLAB_STANDIN_DRIVE") or point.parent / "standin-drive")
    backing.mkdir(parents=True, exist_ok=True)
    point.mkdir(parents=True, exist_ok=True)
    if my_drive.is_symlink():
        my_drive.unlink()
    my_drive.symlink_to(backing, target_is_directory=True)
    mounts.append(str(point))
    print(f"Mounted at {point}")


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    for point in mounts:
        link = Path(point) / "MyDrive"
        if link.is_symlink():
            link.unlink()
    mounts.clear()
