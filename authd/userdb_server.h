// The auth-userdb server: Dovecot's auth-master protocol (USER, PASS, REQUEST, LIST)
// for tern-mda, tern-mra's session workers and tern-mta.
//
// TRUST  Peers are checked by SO_PEERCRED at accept: root, mail_uid, mail_owner,
//        tern-authd's own uid and auth_userdb_allow_users only; anyone else is logged
//        and disconnected before a byte is read. Even an allowed peer is a separate
//        process: a malformed line closes that connection (a bug or a compromise) and
//        nobody else notices. PASS never returns a password hash.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "authd/auth_core.h"
#include "common/connection.h"
#include "common/line_reader.h"
#include "common/sockets.h"

namespace tern::authd {

class UserdbServer {
 public:
  explicit UserdbServer(AuthCore& core);
  ~UserdbServer();
  // Serves one listening socket.
  void listen(int fd);
  // Takes one accepted connection (also used by tests with a socketpair).
  void accept(common::UniqueFd fd);
  void stop();
  size_t connections() const { return conns_.size(); }

 private:
  class Conn;
  AuthCore& core_;
  std::vector<std::unique_ptr<common::net::Listener>> listeners_;
  std::unordered_map<Conn*, std::shared_ptr<Conn>> conns_;
};

}  // namespace tern::authd
