"""What the zygote holds open that every forked worker would share.

Before forking, the zygote lists its open descriptors (Linux: /proc/self/fd)
and names the ones a fork would share between workers: sockets (a database
connection, a client to a local server, opened at import or in a conftest)
and regular files open for writing (a log file, a sqlite database, a
temporary file kept open). Its own descriptors (the channel to shoal, the
fork requests, the stack-dump copy of stderr), pytest's deleted capture
files, its --log-file, coverage's data and pipes are left out: they are
re-created per worker or shared on purpose (docs/fork-isolation.md).
"""

import os
import socket
import stat

_PROC_NET = ("tcp", "tcp6", "udp", "udp6", "unix")


def shared_descriptor(config, own_fds, ignored_prefixes):
    """One line naming the first descriptor a fork would share, or None."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    ignored = set(own_fds) | _pytest_log_file(config)
    for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
        if fd <= 2 or fd in ignored:
            continue
        try:
            mode = os.fstat(fd).st_mode
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if stat.S_ISSOCK(mode):
            return f"a connection to {_peer(fd, target)} (descriptor {fd})"
        if stat.S_ISREG(mode) and _open_for_writing(fd) and not target.endswith(" (deleted)"):
            if not any(target.startswith(prefix) for prefix in ignored_prefixes):
                return f"{target} open for writing (descriptor {fd})"
    return None


def _pytest_log_file(config):
    """The descriptor of pytest's own --log-file, shared on purpose."""
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    stream = getattr(getattr(plugin, "log_file_handler", None), "stream", None)
    try:
        return {stream.fileno()} if stream is not None else set()
    except (OSError, ValueError):
        return set()


def _open_for_writing(fd):
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & (os.O_WRONLY | os.O_RDWR) != 0
    except OSError:
        pass
    return False


def _peer(fd, target):
    """`host:port` (or a Unix socket's path) of a socket's other end, as
    /proc/net lists it by the socket's inode; else its local name."""
    inode = target[len("socket:["):-1] if target.startswith("socket:[") else ""
    for table in _PROC_NET:
        try:
            with open(f"/proc/net/{table}") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if table == "unix" and len(fields) >= 7 and fields[6] == inode:
                        return fields[7] if len(fields) > 7 else "an unnamed Unix socket"
                    if table != "unix" and len(fields) > 9 and fields[9] == inode:
                        return _address(fields[2])
        except OSError:
            continue
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            return str(sock.getsockname())
    except OSError:
        return "a socket"


def _address(hex_address):
    """`0100007F:1538` (as /proc/net/tcp writes it) as `127.0.0.1:5432`."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{int(port, 16)}"
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return f"[{socket.inet_ntop(socket.AF_INET6, words)}]:{int(port, 16)}"
