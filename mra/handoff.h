// The hand-over of a logged-in client, defined once for the three processes of
// tern-mra (Dovecot's login -> post-login -> mail process split):
//
//   tern-mra (login, default_login_user)
//      | connects to $base_dir/mra-postlogin, sends one LOGIN request framed by a
//      | 4-byte length, with the client socket (plaintext) or one end of a
//      | socketpair (TLS: the login process keeps the TLS session and relays
//      | plaintext) attached as SCM_RIGHTS; reads one OK/FAIL reply
//      v
//   tern-mra-postlogin (root; never reads a network byte)
//      | asks tern-authd who logged in (auth-userdb REQUEST with the auth request
//      | id, the login process's auth-client pid and cookie): the user, uid, gid,
//      | home and mail location come from tern-authd, never from the login process;
//      | forks a worker per mail uid (setuid, exec tern-mra --worker) or reuses one;
//      | sends it one SESSION packet with the fd over a SOCK_SEQPACKET socketpair
//      v
//   tern-mra --worker (the mail owner's uid): many sessions on one event loop;
//      sends DONE when a session ends (the post-login process counts sessions per
//      user and IP for mail_max_userip_connections).
//
// Packets: VERB, then TAB-separated key=value fields, values escaped (\\ \t \n \0).
// Anything malformed from a peer process is a bug or a compromise: the receiver
// logs it and closes that channel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace tern::mra::handoff {

// One packet, whole: the fields plus the client's pipelined bytes.
inline constexpr size_t kMaxPacket = 160 * 1024;
// Client bytes that arrived after the login command and travel with the hand-over.
// A client that pipelines more than this behind its LOGIN is refused (no real
// client does: it waits for the tagged OK).
inline constexpr size_t kMaxBuffered = 64 * 1024;

using Fields = std::map<std::string, std::string>;

std::string encode(std::string_view verb, const Fields& fields);
struct Packet {
  std::string verb;
  Fields fields;
  std::string get(const std::string& key) const {
    auto it = fields.find(key);
    return it == fields.end() ? std::string() : it->second;
  }
};
std::optional<Packet> decode(std::string_view data);

// 4-byte big-endian length in front of a packet (the login -> post-login stream).
std::string frame(std::string_view packet);
// The length in a frame header, nullopt when over kMaxPacket.
std::optional<size_t> frame_length(std::string_view header4);

}  // namespace tern::mra::handoff
