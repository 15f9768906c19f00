// TLS with BoringSSL: contexts from PEM files, the StreamFilter that Connection puts
// in front of a socket, and the self-signed certificate of the development default.
//
// The filter runs BoringSSL over memory BIOs, so TLS can start on a live connection
// (STARTTLS) and the event loop never blocks in SSL_read/SSL_write.
//
// This is its own library (tern-common-tls): processes that load Cyrus SASL (which
// links OpenSSL) must not link BoringSSL as well (DESIGN.md §6).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "common/connection.h"
#include "common/result.h"

namespace tern::common::tls {

// A server or client SSL_CTX. reload() re-reads the files; connections already
// running keep the context they started with (SSL holds a reference).
class Context {
 public:
  // min_protocol: "TLSv1.2" or "TLSv1.3". cipher_list: an OpenSSL-style list of the
  // TLS 1.2 suites offered (tls_high_cipherlist, ssl_cipher_list); empty keeps
  // BoringSSL's default, which still has 3DES, static-RSA and CBC-SHA suites. TLS 1.3
  // suites are BoringSSL's fixed AEAD set either way. A list naming an unknown suite is
  // a kConfig error, not silently shortened.
  static Result<std::shared_ptr<Context>> server(const std::string& cert_file, const std::string& key_file,
                                                 const std::string& min_protocol = "TLSv1.2",
                                                 const std::string& cipher_list = "");
  // A client context. With verify, the peer's chain is checked against ca_file (or
  // the system store when empty) and the name against the expected host.
  static Result<std::shared_ptr<Context>> client(bool verify, const std::string& ca_file = "");

  Status reload();
  SSL_CTX* get() const { return ctx_.get(); }
  bool is_server() const { return server_; }
  // The certificate's subject CN, for logs.
  std::string subject() const;

 private:
  Context() = default;
  Status load();
  bssl::UniquePtr<SSL_CTX> ctx_;
  bool server_ = false;
  bool verify_ = false;
  std::string cert_file_, key_file_, ca_file_, min_protocol_, cipher_list_;
};

// A server-side filter for one connection.
std::unique_ptr<net::StreamFilter> server_filter(const Context& ctx);
// A client-side filter; `sni` is sent as server name and, when the context verifies,
// checked against the certificate.
std::unique_ptr<net::StreamFilter> client_filter(const Context& ctx, const std::string& sni);

// Verification outcome on a client filter after the handshake ("" when verified).
std::string verify_error(const net::StreamFilter& filter);

// Writes a self-signed RSA-2048 certificate for `hostname` (CN and subjectAltName)
// and its key to PEM files, key mode 0600. Valid for ten years.
Status make_self_signed(const std::string& cert_file, const std::string& key_file, const std::string& hostname);

}  // namespace tern::common::tls
