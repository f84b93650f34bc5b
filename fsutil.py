"""Writing files so that a crash, kill -9 or power loss leaves the old version or the new one, never half of one.

The recipe: write a temporary file beside the target, flush it and fsync it (the bytes reach the disk), os.replace
it over the target (atomic), then fsync the folder (the rename itself reaches the disk). Without the fsyncs a power
loss can keep the rename but lose the bytes, leaving an empty or partial file under the final name.
"""
import contextlib
import os
import secrets
import shutil


def fsync_dir(path):
    """Make a folder's entries (files created, renamed or removed in it) durable. Where a folder cannot be opened
    or synced (Windows, some network file systems) this does nothing: there is nothing more one can do there."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8"):
    """Open a temporary file beside path for writing ("w" text or "wb" bytes); when the block ends without an
    error it is flushed, fsynced and renamed over path, and the folder is fsynced. On any error the temporary
    file is removed and path is untouched.

        with atomic_write("out/answers.jsonl") as f:
            f.write(...)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode {mode!r}: expected 'w' or 'wb'")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)  # an output into a new folder is made, as the scripts' --output folders are
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}-{secrets.token_hex(3)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the usual permissions (umask applies)
    try:
        with open(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def _is_meta(name):
    return name.endswith("meta.json")


@contextlib.contextmanager
def atomic_output_dir(final_dir):
    """Yield a temporary folder beside final_dir to write outputs into. On success every file is fsynced, then
    they replace those of final_dir: first any *meta.json there is removed, then the data files are renamed in,
    then the new *meta.json last. The meta file vouches for the rest, so a crash midway leaves no meta file (which
    the readers refuse, asking to run the script again), never a new meta beside old data. On an error before the
    swap, the temporary folder is removed and final_dir is untouched."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(final_dir)}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        names = sorted(os.listdir(tmp), key=lambda n: (_is_meta(n), n))  # meta files last
        for name in names:
            fsync_file(os.path.join(tmp, name))
        fsync_dir(tmp)
        os.makedirs(final_dir, exist_ok=True)
        stale = [n for n in names if _is_meta(n) and os.path.exists(os.path.join(final_dir, n))]
        for name in stale:
            os.remove(os.path.join(final_dir, name))
        if stale:
            fsync_dir(final_dir)
        for name in names:
            if _is_meta(name):
                fsync_dir(final_dir)  # every data file is in place before the meta file vouches for it
            os.replace(os.path.join(tmp, name), os.path.join(final_dir, name))
        fsync_dir(final_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
