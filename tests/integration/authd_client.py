"""Small clients of tern-authd's sockets for the tests: the Dovecot auth-client and
auth-master (userdb) protocols spoken by hand over real UNIX sockets."""
import base64
import socket
import time


class LineSocket:
    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def send_raw(self, data):
        self.sock.sendall(data)

    def readline(self):
        """The next line as text, or None when the server closed."""
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:  # closed with our input unread
                return None
            if not data:
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def close(self):
        self.sock.close()


class AuthClient(LineSocket):
    """auth-client: handshake, then AUTH/CONT by request id."""

    def __init__(self, path, pid=None, timeout=60):
        super().__init__(path, timeout)
        self.mechs = {}
        self.cookie = None
        self.spid = None
        self.send("VERSION\t1\t2")
        self.send(f"CPID\t{pid or 4242}")
        self.cpid = pid or 4242
        while True:
            line = self.readline()
            if line is None:
                raise RuntimeError("auth-client closed during handshake")
            parts = line.split("\t")
            if parts[0] == "MECH":
                self.mechs[parts[1]] = parts[2:]
            elif parts[0] == "COOKIE":
                self.cookie = parts[1]
            elif parts[0] == "SPID":
                self.spid = int(parts[1])
            elif parts[0] == "DONE":
                break

    def auth(self, rid, mech, resp=None, service="smtp", rip="127.0.0.1", secured=True, extra=()):
        words = ["AUTH", str(rid), mech, f"service={service}", "lip=127.0.0.1", f"rip={rip}"]
        if secured:
            words.append("secured")
        words.extend(extra)
        if resp is not None:
            words.append("resp=" + (base64.b64encode(resp).decode() if resp else "="))
        self.send("\t".join(words))

    def cont(self, rid, data):
        self.send(f"CONT\t{rid}\t{base64.b64encode(data).decode()}")

    def reply(self):
        """(command, id, fields-list) of the next reply."""
        line = self.readline()
        if line is None:
            return None
        parts = line.split("\t")
        return parts[0], int(parts[1]), parts[2:]

    def plain(self, rid, user, password, **kw):
        """One PLAIN authentication with an initial response; returns the reply."""
        self.auth(rid, "PLAIN", b"\0" + user.encode() + b"\0" + password.encode(), **kw)
        return self.reply()


class UserdbClient(LineSocket):
    def __init__(self, path, timeout=30):
        super().__init__(path, timeout)
        self.send("VERSION\t1\t0")
        first = self.readline()
        if first is None or not first.startswith("VERSION\t1\t"):
            raise RuntimeError(f"bad userdb greeting {first!r}")
        self.readline()  # SPID

    def call(self, line):
        self.send(line)
        out = self.readline()
        return None if out is None else out.split("\t")


def fields(parts):
    """{key: value} of key=value fields (bare flags map to '')."""
    out = {}
    for p in parts:
        k, _, v = p.partition("=")
        out[k] = v
    return out


def wait_socket(path, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(path)
