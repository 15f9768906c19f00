// The session worker of tern-mra (`tern-mra --worker`): runs as one mail uid and
// serves the IMAP and POP3 sessions of that uid's users on one event loop.
//
// Started by tern-mra-postlogin (which switched to the uid before exec) with a
// SOCK_SEQPACKET channel on fd 3: one SESSION packet per logged-in client, with the
// client's socket (or the login process's TLS relay) attached, and the user's
// identity, home and mail location as tern-authd gave them to the post-login
// process. The worker opens the user's MailStore (maildir_store.h; one per user,
// shared by that user's sessions), writes the tagged OK / +OK that the login process
// held back, and runs the session (imap_session.h / pop3_session.h) until it ends;
// then it reports DONE. When the channel closes it exits after its last session.
//
// Idle sessions cost little: an ImapSession (8 bytes per message of the selected
// mailbox), a Connection with a 4 KiB read buffer, and a share of the user's store;
// flags and sizes stay in the memory-mapped index, shared by all.
//
// Mailbox changes: one inotify instance per worker watches new/ and cur/ of every
// mailbox some session has selected. An event marks the directory for a rescan
// (ScanTracker) and, a few milliseconds later (so a burst of renames is one wake-up),
// every session in IDLE on that mailbox gets its untagged EXISTS/EXPUNGE/FETCH. A
// delivery by tern-mda (rename into new/) therefore wakes IDLE at once; changes made
// by Dovecot, mutt or another tern-mra session (renames in cur/, unlinks) likewise.
// inotify was chosen over a notification from the index because it also sees
// programs that never touch the index.
//
// Timeouts: imap_idle_timeout (30 minutes, IDLE included, RFC 3501 5.4) and
// pop3_idle_timeout (10 minutes, RFC 1939 3).
#pragma once

namespace tern::mra {

// The worker's main(): argv as tern-mra's (-c, -o, -v, --worker).
int worker_main(int argc, char** argv);

}  // namespace tern::mra
