"""Who "|command" and "/file" aliases run as (issue 11, finding 2). Postfix local(8),
SECURITY and aliases(5): a command or file named in an alias table is delivered
with the privileges of the table's owner, or of default_privs (nobody) when root
owns it; never as mail_owner, never as root. The owner is taken from the table the
entry came from (two alias_maps with different owners here), and a /file delivery
does not follow a symlink. Root only: the ids are real."""
import os
import pwd
import smtplib

import pytest

from mta_util import add_user, mta_settings, prepare_mail_dir, table_dir
from tern_harness import is_root, wait_for

pytestmark = pytest.mark.skipif(not is_root(), reason="running commands as other users needs root")

# Records the ids the command runs as, and its environment.
RECORD = "|\"/bin/sh -c 'id -u > {out}.tmp; id -g >> {out}.tmp; echo $USER $HOME $LOCAL >> {out}.tmp; mv {out}.tmp {out}'\""


def ids_of(path):
    with open(path) as f:
        lines = f.read().split("\n")
    return int(lines[0]), int(lines[1]), lines[2]


@pytest.fixture
def two_maps(tern_factory):
    d = table_dir()
    out = os.path.join(d, "out")
    os.makedirs(out)
    os.chmod(out, 0o1777)
    daemon = pwd.getpwnam("daemon")
    # The symlink points at a file the command's user could write; the delivery
    # must refuse the link rather than write through it.
    victim = os.path.join(out, "victim")
    open(victim, "w").close()
    os.chown(victim, daemon.pw_uid, daemon.pw_gid)
    os.symlink(victim, os.path.join(out, "link"))
    root_map = os.path.join(d, "aliases")
    with open(root_map, "w") as f:
        f.write("postmaster: alice\n"
                f"rootpipe: {RECORD.format(out=out + '/rootpipe')}\n"
                f"rootfile: {out}/rootfile\n"
                "both: rootpipe, daemonpipe\n")
    daemon_map = os.path.join(d, "aliases.daemon")
    with open(daemon_map, "w") as f:
        f.write(f"daemonpipe: {RECORD.format(out=out + '/daemonpipe')}\n"
                f"daemonfile: {out}/daemonfile\n"
                f"daemonlink: {out}/link\n")
    os.chown(daemon_map, daemon.pw_uid, daemon.pw_gid)
    owner_map = os.path.join(d, "aliases.owner")
    with open(owner_map, "w") as f:
        f.write(f"ownerpipe: {RECORD.format(out=out + '/ownerpipe')}\n")
    maps = f"texthash:{root_map}, texthash:{daemon_map}, texthash:{owner_map}"
    t = tern_factory(settings=mta_settings(d, alias_maps=maps, alias_database=f"texthash:{root_map}"))
    mail_owner = pwd.getpwnam(t.settings["mail_owner"])
    os.chown(owner_map, mail_owner.pw_uid, mail_owner.pw_gid)
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    t.out = out
    t.victim = victim
    t.daemon = daemon
    t.mail_owner = mail_owner
    return t


def send(t, rcpts, subject):
    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=15)
    s.sendmail("alice@example.test", rcpts, f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode())
    s.quit()


def wait_file(path, what):
    wait_for(lambda: os.path.exists(path), 30, what=what)


def test_commands_run_as_the_owner_of_the_table_they_came_from(two_maps):
    t = two_maps
    nobody = pwd.getpwnam("nobody")
    send(t, ["rootpipe@example.test", "daemonpipe@example.test"], "pipes")
    wait_file(os.path.join(t.out, "rootpipe"), "the root table's command")
    wait_file(os.path.join(t.out, "daemonpipe"), "daemon's table's command")
    # Root owns the first table: default_privs (nobody), not mail_owner, not root.
    uid, gid, env = ids_of(os.path.join(t.out, "rootpipe"))
    assert (uid, gid) == (nobody.pw_uid, nobody.pw_gid)
    assert env.split()[0] == "nobody" and env.split()[2] == "rootpipe"
    # daemon owns the second table: daemon, although root owns the first.
    uid, gid, env = ids_of(os.path.join(t.out, "daemonpipe"))
    assert (uid, gid) == (t.daemon.pw_uid, t.daemon.pw_gid)
    assert env.split()[:2] == ["daemon", t.daemon.pw_dir]


def test_an_alias_expanding_into_both_tables_keeps_each_owner(two_maps):
    t = two_maps
    send(t, ["both@example.test"], "both")
    wait_file(os.path.join(t.out, "rootpipe"), "the root table's command")
    wait_file(os.path.join(t.out, "daemonpipe"), "daemon's table's command")
    assert ids_of(os.path.join(t.out, "rootpipe"))[0] == pwd.getpwnam("nobody").pw_uid
    assert ids_of(os.path.join(t.out, "daemonpipe"))[0] == t.daemon.pw_uid


def test_files_are_written_as_the_owner_and_symlinks_refused(two_maps):
    t = two_maps
    send(t, ["daemonfile@example.test", "rootfile@example.test"], "files")
    wait_file(os.path.join(t.out, "daemonfile"), "daemon's file")
    wait_file(os.path.join(t.out, "rootfile"), "the root table's file")
    st = os.stat(os.path.join(t.out, "daemonfile"))
    assert st.st_uid == t.daemon.pw_uid
    assert b"body of files" in open(os.path.join(t.out, "daemonfile"), "rb").read()
    assert os.stat(os.path.join(t.out, "rootfile")).st_uid == pwd.getpwnam("nobody").pw_uid
    send(t, ["daemonlink@example.test"], "link")
    t.wait_log("status=bounced")
    assert os.path.getsize(t.victim) == 0
    assert os.path.islink(os.path.join(t.out, "link"))


def test_a_table_owned_by_mail_owner_runs_nothing(two_maps):
    t = two_maps
    send(t, ["ownerpipe@example.test"], "owner")
    t.wait_log("ownerpipe")
    wait_for(lambda: "status=deferred" in t.log() or "status=bounced" in t.log(), 30, what="refusal")
    assert "mail_owner" in t.log()
    assert not os.path.exists(os.path.join(t.out, "ownerpipe"))
