"""ternctl config: the effective configuration, like postconf.

`ternctl config` prints every parameter, `-n` only those the file sets, `KEY...`
the named ones, `-x` expanded, `-d` the defaults; an unknown name or a broken file
is an error that says what and where. The list of parameters is checked against
the key table in common/config_keys_*.inc, read here independently of the C++.
"""
import glob
import os
import re
import subprocess

import pytest

from tern_harness import BIN, REPO, Tern

KEY_ROW = re.compile(r'^\s*[SLBITZ]\("([A-Za-z0-9_]+)",\s*"((?:[^"\\]|\\.)*)"')


def table_keys():
    """{name: default} from the key table sources."""
    keys = {}
    for inc in sorted(glob.glob(os.path.join(REPO, "common", "config_keys_*.inc"))):
        with open(inc) as f:
            for line in f:
                m = KEY_ROW.match(line)
                if m:
                    assert m.group(1) not in keys, f"{m.group(1)} declared twice"
                    keys[m.group(1)] = m.group(2)
    assert len(keys) > 40
    return keys


def ternctl(conf, *args, overrides=()):
    cmd = [os.path.join(BIN, "ternctl"), "-c", conf]
    for o in overrides:
        cmd += ["-o", o]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30)


def parse_lines(out):
    pairs = []
    for line in out.splitlines():
        k, sep, v = line.partition(" = ")
        assert sep, f"not 'key = value': {line!r}"
        pairs.append((k, v))
    return pairs


@pytest.fixture
def inst():
    t = Tern()  # writes tern.conf; nothing needs to run for ternctl config
    yield t
    t.cleanup()


def test_config_prints_every_parameter_sorted(inst):
    r = ternctl(inst.conf_path, "config")
    assert r.returncode == 0, r.stderr
    pairs = parse_lines(r.stdout)
    names = [k for k, _ in pairs]
    assert names == sorted(table_keys())
    values = dict(pairs)
    # File values as written (unexpanded), defaults for the rest.
    assert values["mydestination"] == "$myhostname, localhost.$mydomain, localhost, $mydomain"
    assert values["smtpd_port"] == str(inst.ports["smtpd_port"])
    assert values["myorigin"] == "$myhostname"
    assert values["master_services"] == "authd, mda, mta, mra"


def test_config_n_prints_only_what_the_file_sets(inst):
    r = ternctl(inst.conf_path, "config", "-n")
    assert r.returncode == 0, r.stderr
    assert parse_lines(r.stdout) == sorted((k, str(v)) for k, v in inst.settings.items())


def test_config_n_includes_overrides(inst):
    r = ternctl(inst.conf_path, "config", "-n", overrides=["syslog_name=postfix-tern"])
    assert r.returncode == 0, r.stderr
    assert ("syslog_name", "postfix-tern") in parse_lines(r.stdout)


def test_config_named_keys_and_expansion(inst):
    r = ternctl(inst.conf_path, "config", "myhostname", "imap_port", "mydestination")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"myhostname = {inst.hostname}\n"
                        f"imap_port = {inst.ports['imap_port']}\n"
                        "mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain\n")
    r = ternctl(inst.conf_path, "config", "-x", "mydestination", "myorigin")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"mydestination = {inst.hostname}, localhost.{inst.domain}, localhost, {inst.domain}\n"
                        f"myorigin = {inst.hostname}\n")
    # -n with names: only those that are set.
    r = ternctl(inst.conf_path, "config", "-n", "myhostname", "mail_name")
    assert r.stdout == f"myhostname = {inst.hostname}\n"


def test_config_d_prints_the_table_defaults(inst):
    r = ternctl(inst.conf_path, "config", "-d")
    assert r.returncode == 0, r.stderr
    values = dict(parse_lines(r.stdout))
    for k, default in table_keys().items():
        if default != "@computed":
            assert values[k] == default, k
    r = ternctl(inst.conf_path, "config", "-d", "smtpd_port")
    assert r.stdout == "smtpd_port = 25\n"


def test_unknown_key_is_an_error_with_a_suggestion(inst):
    r = ternctl(inst.conf_path, "config", "myhostname", "myhostnme")
    assert r.returncode == 64  # EX_USAGE
    assert r.stdout == f"myhostname = {inst.hostname}\n"
    assert r.stderr == "ternctl: warning: unknown parameter 'myhostnme'; did you mean 'myhostname'?\n"


def test_unknown_option_is_an_error(inst):
    r = ternctl(inst.conf_path, "config", "-q")
    assert r.returncode == 64
    assert "unknown option -q" in r.stderr


def test_broken_file_names_file_and_line(inst):
    with open(inst.conf_path, "a") as f:
        f.write("smtpd_prot = 25\n")
    lineno = len(open(inst.conf_path).read().splitlines())
    r = ternctl(inst.conf_path, "config", "-n")
    assert r.returncode == 78  # EX_CONFIG
    assert r.stdout == ""
    assert f"{inst.conf_path}:{lineno}: unknown parameter 'smtpd_prot'; did you mean 'smtpd_port'?" in r.stderr


def test_bad_override_is_an_error(inst):
    r = ternctl(inst.conf_path, "config", overrides=["smtpd_port=seventy"])
    assert r.returncode == 78
    assert "-o smtpd_port=seventy: parameter 'smtpd_port': 'seventy' is not a number" in r.stderr


def test_missing_file(tmp_path):
    r = ternctl(str(tmp_path / "nope.conf"), "config")
    assert r.returncode == 78
    assert f"open {tmp_path}/nope.conf: No such file or directory" in r.stderr


def test_sample_config_in_etc_is_valid_and_its_commented_defaults_are_true():
    sample = os.path.join(REPO, "etc", "tern.conf")
    r = ternctl(sample, "config", "-n")
    assert r.returncode == 0, r.stderr
    set_keys = [k for k, _ in parse_lines(r.stdout)]
    active = []
    commented = {}
    with open(sample) as f:
        for line in f:
            m = re.match(r"^([a-z_0-9]+) = ", line)
            if m:
                active.append(m.group(1))
            m = re.match(r"^#([a-z_0-9]+) =(?: (.*))?$", line.rstrip("\n"))
            if m:
                commented[m.group(1)] = m.group(2) or ""
    assert set_keys == sorted(active)
    # "#key = value" lines claim to show the built-in default: check every one.
    defaults = dict(parse_lines(ternctl(sample, "config", "-d").stdout))
    assert len(commented) > 30
    for k, v in commented.items():
        assert k in defaults, f"etc/tern.conf mentions unknown parameter {k}"
        assert defaults[k] == v, f"etc/tern.conf says #{k} = {v!r}, the default is {defaults[k]!r}"
    # Every general parameter is mentioned in the sample.
    general = [m.group(1) for m in map(KEY_ROW.match, open(os.path.join(REPO, "common", "config_keys_general.inc")))
               if m]
    missing = [k for k in general if k not in commented and k not in active]
    assert not missing, f"etc/tern.conf does not mention {missing}"
