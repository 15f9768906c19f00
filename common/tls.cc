#include "common/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

namespace tern::common::tls {
namespace {

std::string ssl_error_text() {
  std::string out;
  uint32_t e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

uint16_t protocol_version(const std::string& name) {
  if (name == "TLSv1.3") return TLS1_3_VERSION;
  if (name == "TLSv1.1") return TLS1_1_VERSION;
  if (name == "TLSv1") return TLS1_VERSION;
  return TLS1_2_VERSION;
}

class Filter : public net::StreamFilter {
 public:
  Filter(SSL_CTX* ctx, bool server, const std::string& sni, bool verify) : server_(server) {
    ssl_.reset(SSL_new(ctx));
    rbio_ = BIO_new(BIO_s_mem());
    wbio_ = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rbio_, -1);
    SSL_set_bio(ssl_.get(), rbio_, wbio_);  // the SSL owns both BIOs now
    if (server) {
      SSL_set_accept_state(ssl_.get());
    } else {
      SSL_set_connect_state(ssl_.get());
      if (!sni.empty()) {
        SSL_set_tlsext_host_name(ssl_.get(), sni.c_str());
        if (verify) {
          X509_VERIFY_PARAM* p = SSL_get0_param(ssl_.get());
          X509_VERIFY_PARAM_set1_host(p, sni.c_str(), sni.size());
        }
      }
    }
  }

  Status start(std::string& net_out) override {
    if (!server_) {
      Status s = drive_handshake();
      drain(net_out);
      return s;
    }
    return {};
  }

  Status feed(std::string_view net_in, std::string& plain_out, std::string& net_out) override {
    if (!net_in.empty()) BIO_write(rbio_, net_in.data(), static_cast<int>(net_in.size()));
    if (!SSL_is_init_finished(ssl_.get())) {
      Status s = drive_handshake();
      drain(net_out);
      if (!s) return s;
      if (!SSL_is_init_finished(ssl_.get())) return {};
    }
    char buf[16384];
    for (;;) {
      int n = SSL_read(ssl_.get(), buf, sizeof buf);
      if (n > 0) {
        plain_out.append(buf, static_cast<size_t>(n));
        continue;
      }
      int err = SSL_get_error(ssl_.get(), n);
      if (err == SSL_ERROR_WANT_READ) break;
      if (err == SSL_ERROR_ZERO_RETURN) {
        peer_closed_ = true;
        break;
      }
      drain(net_out);
      return make_error(ErrorKind::kProtocol, "TLS read: " + ssl_error_text());
    }
    drain(net_out);  // post-handshake messages (tickets, key updates)
    return {};
  }

  Status encrypt(std::string_view plain, std::string& net_out) override {
    while (!plain.empty()) {
      int chunk = static_cast<int>(std::min<size_t>(plain.size(), 1 << 20));
      int n = SSL_write(ssl_.get(), plain.data(), chunk);
      if (n <= 0) {
        return make_error(ErrorKind::kProtocol, "TLS write: " + ssl_error_text());
      }
      plain.remove_prefix(static_cast<size_t>(n));
      drain(net_out);
    }
    return {};
  }

  bool handshake_done() const override { return SSL_is_init_finished(ssl_.get()); }

  void shutdown(std::string& net_out) override {
    SSL_shutdown(ssl_.get());
    drain(net_out);
  }

  std::string description() const override {
    const SSL_CIPHER* c = SSL_get_current_cipher(ssl_.get());
    if (!c) return "no TLS session";
    int alg_bits = 0;
    int bits = SSL_CIPHER_get_bits(c, &alg_bits);
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl_.get()),
                  SSL_CIPHER_standard_name(c), bits, alg_bits);
    return buf;
  }

  bool peer_closed() const override { return peer_closed_; }

  SSL* ssl() const { return ssl_.get(); }

 private:
  Status drive_handshake() {
    int rc = SSL_do_handshake(ssl_.get());
    if (rc == 1) return {};
    int err = SSL_get_error(ssl_.get(), rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return {};
    std::string why = ssl_error_text();
    // A client that rejected the server's certificate: the verify result says why
    // ("self signed certificate", "Hostname mismatch"), the error queue only that it did.
    long vr = SSL_get_verify_result(ssl_.get());
    if (!server_ && vr != X509_V_OK) {
      why = std::string("certificate verification failed: ") + X509_verify_cert_error_string(vr) + " (" + why + ")";
    }
    return make_error(ErrorKind::kProtocol, "TLS handshake failed: " + why);
  }

  void drain(std::string& net_out) {
    char* data = nullptr;
    long n = BIO_get_mem_data(wbio_, &data);
    if (n > 0) {
      net_out.append(data, static_cast<size_t>(n));
      BIO_reset(wbio_);
    }
  }

  bssl::UniquePtr<SSL> ssl_;
  BIO* rbio_;
  BIO* wbio_;
  bool server_;
  bool peer_closed_ = false;
};

}  // namespace

Result<std::shared_ptr<Context>> Context::server(const std::string& cert_file, const std::string& key_file,
                                                 const std::string& min_protocol, const std::string& cipher_list) {
  std::shared_ptr<Context> c(new Context);
  c->server_ = true;
  c->cipher_list_ = cipher_list;
  c->cert_file_ = cert_file;
  c->key_file_ = key_file.empty() ? cert_file : key_file;
  c->min_protocol_ = min_protocol;
  if (Status s = c->load(); !s) return s.take_error();
  return c;
}

Result<std::shared_ptr<Context>> Context::client(bool verify, const std::string& ca_file) {
  std::shared_ptr<Context> c(new Context);
  c->server_ = false;
  c->verify_ = verify;
  c->ca_file_ = ca_file;
  c->min_protocol_ = "TLSv1.2";
  if (Status s = c->load(); !s) return s.take_error();
  return c;
}

Status Context::load() {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return make_error(ErrorKind::kTemp, "SSL_CTX_new: " + ssl_error_text());
  SSL_CTX_set_min_proto_version(ctx.get(), protocol_version(min_protocol_));
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  if (server_) {
    // Strict: an unknown name or a list that leaves nothing is an error, where the
    // lenient SSL_CTX_set_cipher_list would drop the name and go on with what is left.
    if (!cipher_list_.empty() && SSL_CTX_set_strict_cipher_list(ctx.get(), cipher_list_.c_str()) != 1) {
      return make_error(ErrorKind::kConfig, "invalid TLS cipher list '" + cipher_list_ + "': " + ssl_error_text());
    }
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file_.c_str()) != 1) {
      return make_error(ErrorKind::kConfig, "cannot load TLS certificate " + cert_file_ + ": " + ssl_error_text());
    }
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_file_.c_str(), SSL_FILETYPE_PEM) != 1) {
      return make_error(ErrorKind::kConfig, "cannot load TLS key " + key_file_ + ": " + ssl_error_text());
    }
    if (SSL_CTX_check_private_key(ctx.get()) != 1) {
      return make_error(ErrorKind::kConfig, "TLS key " + key_file_ + " does not match certificate " + cert_file_);
    }
    // Session tickets would need key rotation across daemons; plain resumption
    // caches per process are enough for mail clients.
    SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx.get(), reinterpret_cast<const uint8_t*>("tern"), 4);
  } else {
    if (verify_) {
      SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
      if (!ca_file_.empty()) {
        if (SSL_CTX_load_verify_locations(ctx.get(), ca_file_.c_str(), nullptr) != 1) {
          return make_error(ErrorKind::kConfig, "cannot load CA file " + ca_file_ + ": " + ssl_error_text());
        }
      } else if (SSL_CTX_load_verify_locations(ctx.get(), "/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs") != 1) {
        ERR_clear_error();
      }
    } else {
      SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    }
  }
  ctx_ = std::move(ctx);
  return {};
}

Status Context::reload() { return load(); }

std::string Context::subject() const {
  X509* cert = SSL_CTX_get0_certificate(ctx_.get());
  if (!cert) return "";
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return buf;
}

std::unique_ptr<net::StreamFilter> server_filter(const Context& ctx) {
  return std::make_unique<Filter>(ctx.get(), true, "", false);
}

std::unique_ptr<net::StreamFilter> client_filter(const Context& ctx, const std::string& sni) {
  return std::make_unique<Filter>(ctx.get(), false, sni, SSL_CTX_get_verify_mode(ctx.get()) != SSL_VERIFY_NONE);
}

std::string verify_error(const net::StreamFilter& filter) {
  const auto* f = dynamic_cast<const Filter*>(&filter);
  if (!f) return "not a TLS filter";
  long r = SSL_get_verify_result(f->ssl());
  if (r == X509_V_OK) return "";
  return X509_verify_cert_error_string(r);
}

Status make_self_signed(const std::string& cert_file, const std::string& key_file, const std::string& hostname) {
  bssl::UniquePtr<RSA> rsa(RSA_new());
  bssl::UniquePtr<BIGNUM> e(BN_new());
  BN_set_word(e.get(), RSA_F4);
  if (!RSA_generate_key_ex(rsa.get(), 2048, e.get(), nullptr)) {
    return make_error(ErrorKind::kTemp, "RSA key generation: " + ssl_error_text());
  }
  bssl::UniquePtr<EVP_PKEY> pkey(EVP_PKEY_new());
  EVP_PKEY_assign_RSA(pkey.get(), rsa.release());

  bssl::UniquePtr<X509> x(X509_new());
  X509_set_version(x.get(), 2);
  uint8_t serial[16];
  FILE* ur = std::fopen("/dev/urandom", "rb");
  if (!ur || std::fread(serial, 1, sizeof serial, ur) != sizeof serial) {
    if (ur) std::fclose(ur);
    return make_error(ErrorKind::kTemp, "cannot read /dev/urandom");
  }
  std::fclose(ur);
  serial[0] &= 0x7f;
  bssl::UniquePtr<BIGNUM> sn(BN_bin2bn(serial, sizeof serial, nullptr));
  BN_to_ASN1_INTEGER(sn.get(), X509_get_serialNumber(x.get()));
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 10L * 365 * 24 * 3600);
  X509_set_pubkey(x.get(), pkey.get());
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const uint8_t*>("Tern development"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const uint8_t*>(hostname.c_str()), -1, -1, 0);
  X509_set_issuer_name(x.get(), name);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, x.get(), x.get(), nullptr, nullptr, 0);
  std::string san = "DNS:" + hostname + ",DNS:localhost,IP:127.0.0.1";
  bssl::UniquePtr<X509_EXTENSION> ext(X509V3_EXT_nconf_nid(nullptr, &v3, NID_subject_alt_name, san.c_str()));
  if (ext) X509_add_ext(x.get(), ext.get(), -1);
  bssl::UniquePtr<X509_EXTENSION> bc(X509V3_EXT_nconf_nid(nullptr, &v3, NID_basic_constraints, "critical,CA:TRUE"));
  if (bc) X509_add_ext(x.get(), bc.get(), -1);
  if (!X509_sign(x.get(), pkey.get(), EVP_sha256())) {
    return make_error(ErrorKind::kTemp, "certificate signing: " + ssl_error_text());
  }

  int kfd = ::open(key_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (kfd < 0) return errno_error("create " + key_file, errno);
  FILE* kf = ::fdopen(kfd, "w");
  bool ok = PEM_write_PrivateKey(kf, pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  ok = (std::fclose(kf) == 0) && ok;
  if (!ok) return make_error(ErrorKind::kTemp, "cannot write " + key_file);
  FILE* cf = std::fopen(cert_file.c_str(), "w");
  if (!cf) return errno_error("create " + cert_file, errno);
  ok = PEM_write_X509(cf, x.get()) == 1;
  ok = (std::fclose(cf) == 0) && ok;
  if (!ok) return make_error(ErrorKind::kTemp, "cannot write " + cert_file);
  return {};
}

}  // namespace tern::common::tls
