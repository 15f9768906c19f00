"""bench/run end to end with tiny N, so that the benchmark harness keeps working: a
private Postfix + Dovecot and a private Tern are started, every scenario runs once,
the table is printed and written as markdown and CSV, and nothing is left running.

The SMTP part must produce figures for both suites (every message counted in the
Maildir, PSS sampled, fsync calls counted with strace). A scenario a suite cannot
run yet (IMAP/POP3 before tern-mra serves them) must say 'n/a' with a reason,
never an empty cell or a made-up figure."""
import csv
import glob
import os
import shutil
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "..", "..", "bench", "run")


def bench_processes(marker):
    """Processes whose command line or working directory is under marker (this run's
    scratch parent: another bench run on the machine must not count)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{d}/cwd")
        except OSError:
            continue
        if marker in cmd or cwd.startswith(marker):
            found.append((int(d), cmd.strip()))
    return found


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("bench/run needs root: Postfix and Dovecot start as root and drop privileges")
    out = tmp_path_factory.mktemp("bench-results")
    # Postfix and Dovecot drop privileges: the scratch parent must be searchable by
    # them, which pytest's 0700 temporary directories are not.
    parent = tempfile.mkdtemp(prefix="tern-bench-quick-", dir="/tmp")
    os.chmod(parent, 0o755)
    try:
        r = subprocess.run([RUN, "--quick", "--n", "20", "--runs", "1", "--box", "40", "--idle", "50",
                            "--out", str(out)], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, TERN_BENCH_TMPDIR=parent))
        leftover = bench_processes(parent)
    finally:
        if not bench_processes(parent):
            shutil.rmtree(parent, ignore_errors=True)
    csvs = glob.glob(os.path.join(out, "bench-*.csv"))
    rows, header = [], []
    if csvs:
        with open(csvs[0], newline="") as f:
            for rec in csv.reader(f):
                if rec and rec[0] == "header":
                    header.append(rec[1])
                elif rec and rec[0] != "section":
                    rows.append(rec)
    return dict(r=r, out=out, leftover=leftover, rows=rows, header=header, csvs=csvs)


def rows_of(q, section):
    return [r for r in q["rows"] if r[0] == section]


def test_runs_and_writes_markdown_and_csv(quick):
    r = quick["r"]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(quick["csvs"]) == 1
    md = glob.glob(os.path.join(quick["out"], "bench-*.md"))
    assert len(md) == 1
    text = open(md[0]).read()
    assert "| scenario | unit | Tern | Postfix/Dovecot | ratio |" in text
    assert os.path.exists(os.path.join(quick["out"], "latest.csv"))
    # The table went to stdout too.
    assert "SMTP in 1 KB, concurrency 50: end to end" in r.stdout


def test_leaves_nothing_running(quick):
    assert quick["leftover"] == []


def test_smtp_has_figures_for_both_suites(quick):
    smtp = rows_of(quick, "SMTP")
    # 1 KB and 100 KB, concurrency 1, 10, 50: accepted, end to end, peak PSS (all,
    # and anonymous memory only).
    assert len(smtp) == 24
    for rec in smtp:
        scenario, tern_median, other_median = rec[1], rec[3], rec[7]
        assert float(tern_median) > 0, scenario
        assert float(other_median) > 0, scenario
        assert float(rec[11]) > 0, scenario  # the ratio


def test_equal_terms_are_checked_and_stated(quick):
    header = "\n".join(quick["header"])
    # fsync calls observed with strace for each suite, per message.
    for suite in ("Tern", "Postfix/Dovecot"):
        line = [h for h in quick["header"] if h.startswith("fsync observed") and f"{suite}:" in h]
        assert line, header
        per_msg = float(line[0].split(f"{suite}: ")[1].split()[0])
        assert per_msg >= 1, line[0]  # both suites fsync every message
    assert "Passwords: Tern stores SHA512-CRYPT, Dovecot's passwd-file {SHA512-CRYPT}" in header
    assert "WARNING" not in header
    assert "mail_fsync" in header


def test_other_scenarios_have_figures_or_a_reason(quick):
    names = {r[0] for r in quick["rows"]}
    assert {"IMAP", "POP3", "Idle"} <= names
    for rec in quick["rows"]:
        section, scenario = rec[0], rec[1]
        for median, na in ((rec[3], rec[13]), (rec[7], rec[14])):
            if median == "n/a":
                assert na.strip(), f"{scenario}: 'n/a' without a reason"
            else:
                assert float(median) > 0, scenario
    # Dovecot serves IMAP and POP3 here, so its side of every row has a figure.
    for rec in quick["rows"]:
        if rec[0] in ("IMAP", "POP3", "Idle"):
            assert rec[7] != "n/a", f"{rec[1]}: {rec[14]}"
