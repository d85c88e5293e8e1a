"""File modes of what hf_lln writes: what the user's umask gives, as for any file they create.

Two writers in the stack create private files whatever the umask: ``tempfile`` (folders 0700, files 0600,
before a rename into place) and safetensors >= 0.8 (``model.safetensors`` 0600; safetensors issue #782).
A model folder written that way cannot be read by another user, or by a container running as another uid.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting a harmless one and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: ``0o777`` less the umask."""
    return 0o777 & ~current_umask()


def make_shareable(path: str | os.PathLike, *, recursive: bool = True, pattern: str = "*") -> None:
    """Give ``path`` (a file, or a folder with the files and folders matching ``pattern`` below it) the modes
    of a freshly created file or folder. For folders this writer just wrote (staging folders, checkpoints)."""
    path = Path(path)
    files, folders = file_mode(), folder_mode()
    if path.is_file():
        os.chmod(path, files)
        return
    os.chmod(path, folders)
    for child in path.rglob(pattern) if recursive else path.glob(pattern):
        if child.is_symlink():
            continue
        os.chmod(child, folders if child.is_dir() else files)
