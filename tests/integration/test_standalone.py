"""Each daemon runs without tern-master: under systemd (the units in etc/) or alone.

- The .socket units' FileDescriptorName= values are the listener names tern-master
  passes to each daemon (read from the running daemons' LISTEN_FDNAMES), their
  ListenStream= and SocketUser= match the built-in defaults, and each service
  unit's Sockets= names exactly its socket units. systemd-analyze verifies the
  unit files; logrotate checks the logrotate snippet.
- Each daemon started alone with --foreground and its own config binds its own
  listeners (no master, no LISTEN_FDS), as the invoking user.
- A daemon started the way systemd starts it (sockets passed as LISTEN_FDS with
  FileDescriptorName names, by systemd-socket-activate) serves those sockets and
  binds nothing of its own.
"""
import configparser
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess

import pytest

from tern_harness import BIN, REPO, Tern, free_port, is_root, port_open, proc_status, unix_open, wait_for

ETC = os.path.join(REPO, "etc")
DAEMONS = ["authd", "mda", "mta", "mra"]
# Listener name -> the parameter that sets its port (inet) or None (UNIX, in base_dir).
PORT_KEY = {"smtp": "smtpd_port", "submission": "submission_port", "smtps": "smtps_port",
            "imap": "imap_port", "imaps": "imaps_port", "pop3": "pop3_port", "pop3s": "pop3s_port",
            "auth-client": None, "auth-userdb": None, "lmtp": None, "sendmail": None, "login-auth-client": None}
# UNIX listener name -> its file in base_dir, where that is not the name itself.
SOCKET_FILE = {"login-auth-client": "login/auth-client"}
# Daemon -> the parameter naming the user that owns its UNIX sockets.
SOCKET_OWNER_KEY = {"authd": "authd_user", "mda": "mail_uid", "mta": "mail_owner"}


def read_unit(path):
    p = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    p.optionxform = str
    with open(path) as f:
        p.read_file(f)
    return p


def socket_units():
    """{daemon: {fdname: (unit file name, parsed unit)}} from etc/*.socket."""
    out = {d: {} for d in DAEMONS}
    for path in sorted(glob.glob(os.path.join(ETC, "*.socket"))):
        u = read_unit(path)
        service = u["Socket"]["Service"]
        assert service.startswith("tern-") and service.endswith(".service"), path
        daemon = service[len("tern-"):-len(".service")]
        name = u["Socket"]["FileDescriptorName"]
        assert name not in out[daemon], f"two socket units named {name} for {service}"
        out[daemon][name] = (os.path.basename(path), u)
    return out


def defaults():
    r = subprocess.run([os.path.join(BIN, "ternctl"), "-c", "/dev/null", "config", "-d"], capture_output=True,
                       text=True, check=True)
    return dict(line.split(" = ", 1) for line in r.stdout.splitlines())


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(e.decode().split("=", 1) for e in f.read().split(b"\0") if b"=" in e)


def test_socket_unit_names_are_the_names_tern_master_passes(tern):
    units = socket_units()
    for d in DAEMONS:
        pid = tern.pid_of(d)
        names = environ(pid)["LISTEN_FDNAMES"].split(":")
        assert len(names) == int(environ(pid)["LISTEN_FDS"])
        assert set(names) == set(units[d]), f"tern-{d}: master passes {names}, units name {sorted(units[d])}"


def test_socket_units_listen_where_the_defaults_say():
    dflt = defaults()
    for d, by_name in socket_units().items():
        assert by_name, f"no socket units for tern-{d}"
        for name, (fname, u) in by_name.items():
            listen = u["Socket"]["ListenStream"]
            key = PORT_KEY[name]
            if key:
                assert listen == dflt[key], f"{fname}: ListenStream={listen}, {key} defaults to {dflt[key]}"
            else:
                assert listen == dflt["base_dir"] + "/" + SOCKET_FILE.get(name, name), fname
                assert u["Socket"]["SocketUser"] == dflt[SOCKET_OWNER_KEY[d]], fname
            assert u["Unit"]["PartOf"] == f"tern-{d}.service", fname


def test_service_units_use_their_sockets_and_binaries():
    dflt = defaults()
    for d, by_name in socket_units().items():
        svc = read_unit(os.path.join(ETC, f"tern-{d}.service"))
        socks = sorted(f for f, _ in by_name.values())
        assert sorted(svc["Service"]["Sockets"].split()) == socks
        assert sorted(svc["Unit"]["Requires"].split()) == socks
        assert svc["Service"]["ExecStart"] == f"{dflt['daemon_directory']}/tern-{d} --foreground"
        assert "tern-master.service" in svc["Unit"]["Conflicts"]
        assert "User" not in svc["Service"]  # it starts as root and drops to its configured user
    master = read_unit(os.path.join(ETC, "tern-master.service"))
    assert master["Service"]["ExecStart"] == f"{dflt['command_directory']}/tern-master --foreground"
    for d in DAEMONS:
        assert f"tern-{d}.service" in master["Unit"]["Conflicts"]


def test_unit_files_verify():
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze missing: scripts/setup installs the systemd package")
    units = sorted(glob.glob(os.path.join(ETC, "*.service")) + glob.glob(os.path.join(ETC, "*.socket")))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    # The programs are not installed on a build machine; everything else must be clean.
    problems = [l for l in (r.stdout + r.stderr).splitlines() if l.strip() and "is not executable" not in l]
    assert not problems, "\n".join(problems)


def test_logrotate_snippet(tmp_path):
    if not shutil.which("logrotate"):
        pytest.skip("logrotate missing: scripts/setup installs it")
    conf = tmp_path / "tern"
    shutil.copy(os.path.join(ETC, "logrotate"), conf)
    os.chmod(conf, 0o644)
    r = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "error" not in out.lower(), out
    assert "rotating pattern: /var/log/tern.log" in out


# --- daemons alone ------------------------------------------------------------------

def unprivileged_user():
    """Who 'the invoking user' is: ourselves, or when we are root, nobody."""
    if not is_root():
        return pwd.getpwuid(os.geteuid())
    return pwd.getpwnam("nobody")


def as_user_settings(user):
    return {"mail_owner": user.pw_name, "default_login_user": user.pw_name, "authd_user": user.pw_name,
            "mail_uid": user.pw_name, "mail_gid": str(user.pw_gid)}


TLS_LISTENERS = {"smtps", "imaps", "pop3s"}


def served(addr, tls=False):
    """True when a daemon accepts on addr and acts: sends a greeting, completes or
    refuses a TLS handshake, or closes. A socket nobody serves only times out (the
    kernel completes the TCP handshake from the listen backlog on its own)."""
    import ssl
    try:
        fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(addr)
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                try:
                    with ctx.wrap_socket(s) as t:
                        return True
                except (ssl.SSLError, ConnectionError):
                    return True
            s.recv(512)  # a greeting, or b"" when it closes
            return True
    except socket.timeout:
        return False
    except OSError:
        return False


def listener_addrs(t, daemon, ports=None):
    """{name: address} of the daemon's listeners (ports: overrides of the config's)."""
    names = {"mta": ["smtp", "submission", "smtps", "sendmail"], "mra": ["imap", "imaps", "pop3", "pop3s"],
             "authd": ["auth-client", "auth-userdb", "login-auth-client"], "mda": ["lmtp"]}[daemon]
    out = {}
    for n in names:
        if PORT_KEY[n]:
            out[n] = ("127.0.0.1", (ports or {}).get(n) or t.port(n))
        else:
            out[n] = (ports or {}).get(n) or t.socket_path(SOCKET_FILE.get(n, n))
    return out


def listeners_up(t, daemon, ports=None):
    """True when every listener of the daemon is served."""
    return all(served(a, n in TLS_LISTENERS) for n, a in listener_addrs(t, daemon, ports).items())


def run_alone(t, daemon, user=None, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_") and k != "TERN_MASTER_PID"}
    env.update(env_extra or {})
    kw = {}
    if user is not None and is_root():
        kw = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    err = open(os.path.join(t.dir, f"{daemon}.stderr"), "wb")
    p = subprocess.Popen([os.path.join(BIN, f"tern-{daemon}"), "--foreground", "-c", t.conf_path],
                         stdout=err, stderr=err, env=env, **kw)
    err.close()
    return p


def stop(p, t, daemon):
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise
    out = open(os.path.join(t.dir, f"{daemon}.stderr"), "rb").read().decode(errors="replace")
    return rc, out


@pytest.mark.parametrize("daemon", DAEMONS)
def test_daemon_alone_binds_its_own_listeners(daemon):
    user = unprivileged_user()
    t = Tern(settings=as_user_settings(user))
    try:
        if is_root():
            subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", t.dir], check=True)
        assert not listeners_up(t, daemon)
        p = run_alone(t, daemon, user)
        try:
            wait_for(lambda: p.poll() is None and listeners_up(t, daemon), timeout=20,
                     what=f"tern-{daemon} listening alone")
            st = proc_status(p.pid)
            assert st["Uid"].split() == [str(user.pw_uid)] * 4
            assert int(st["PPid"]) == os.getpid()  # no master in between
            # It made the directories the master would have made.
            for key in ("base_dir", "queue_directory", "data_directory"):
                assert os.path.isdir(t.settings[key]), key
        finally:
            rc, out = stop(p, t, daemon)
        assert rc == 0, out
        assert "daemon started" in t.log()
    finally:
        t.cleanup()


@pytest.mark.skipif(not is_root(), reason="starting as root and dropping to the system users needs root")
@pytest.mark.parametrize("daemon", DAEMONS)
def test_daemon_alone_as_root_drops_to_its_user(daemon):
    # What its systemd unit does when it runs without socket activation.
    t = Tern()
    try:
        p = run_alone(t, daemon)
        try:
            wait_for(lambda: p.poll() is None and listeners_up(t, daemon), timeout=20,
                     what=f"tern-{daemon} listening alone")
            want = {"authd": "tern-auth", "mda": "vmail", "mta": "tern", "mra": "tern-login"}[daemon]
            uid = pwd.getpwnam(want).pw_uid
            wait_for(lambda: proc_status(p.pid)["Uid"].split() == [str(uid)] * 4, timeout=10,
                     what="privilege drop")
        finally:
            rc, out = stop(p, t, daemon)
        assert rc == 0, out
    finally:
        t.cleanup()


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"),
                    reason="systemd-socket-activate missing: scripts/setup installs the systemd package")
@pytest.mark.parametrize("daemon", DAEMONS)
def test_daemon_under_socket_activation_serves_the_passed_sockets(daemon):
    units = socket_units()[daemon]
    names = sorted(units)
    user = unprivileged_user()
    t = Tern(settings=as_user_settings(user))
    try:
        if is_root():
            subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", t.dir], check=True)
        # systemd's sockets at other ports and paths than the config's: a daemon that
        # served the config's would have bound them itself.
        passed = {}
        for n in names:
            passed[n] = free_port() if PORT_KEY[n] else os.path.join(t.dir, "sd-" + n)
        cmd = ["systemd-socket-activate"]
        for n in names:
            cmd += ["-l", f"127.0.0.1:{passed[n]}" if PORT_KEY[n] else passed[n]]
        cmd += ["--fdname=" + ":".join(names)]
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                cmd += ["-E", f"{k}={os.environ[k]}"]
        cmd += [os.path.join(BIN, f"tern-{daemon}"), "--foreground", "-c", t.conf_path]
        kw = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[]) if is_root() else {}
        err = open(os.path.join(t.dir, "activate.stderr"), "wb")
        p = subprocess.Popen(cmd, stdout=err, stderr=err, **kw)
        err.close()
        try:
            first = listener_addrs(t, daemon, passed)[names[0]]
            # systemd-socket-activate execs the daemon on the first connection.
            wait_for(lambda: (unix_open(first) if isinstance(first, str) else port_open(*first)), timeout=20,
                     what="activation socket")
            wait_for(lambda: "daemon started" in t.log(), timeout=20, what=f"tern-{daemon} started")
            wait_for(lambda: listeners_up(t, daemon, passed), timeout=20, what="passed sockets served")
            assert environ(p.pid)["LISTEN_FDNAMES"] == ":".join(names)
            for i in range(len(names)):
                assert os.readlink(f"/proc/{p.pid}/fd/{3 + i}").startswith("socket:")
            for n, a in listener_addrs(t, daemon).items():
                if isinstance(a, str):
                    assert not os.path.exists(a), f"tern-{daemon} bound {a} itself"
                else:
                    assert not port_open(*a), f"tern-{daemon} bound {n} itself"
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=15)
        assert p.returncode == 0, open(os.path.join(t.dir, "activate.stderr")).read()
    finally:
        t.cleanup()
