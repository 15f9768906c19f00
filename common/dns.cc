#include "common/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "common/log.h"

namespace tern::common::dns {

const char* status_name(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kNxDomain: return "Host not found";
    case Status::kNoData: return "No address associated with hostname";
    case Status::kTempFail: return "Host not found, try again";
    case Status::kBadName: return "bad name";
  }
  return "?";
}

bool valid_hostname(const std::string& name_in) {
  std::string name = name_in;
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (name.empty() || name.size() > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '.') {
      if (label == 0 || name[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
    if (c == '-' && label == 0) return false;
    if (++label > 63) return false;
  }
  return label > 0 && name.back() != '-';
}

namespace {

std::once_flag g_ares_once;

Status classify(int status, std::string* error) {
  switch (status) {
    case ARES_SUCCESS: return Status::kOk;
    case ARES_ENOTFOUND: *error = "NXDOMAIN"; return Status::kNxDomain;
    case ARES_ENODATA: *error = "no records"; return Status::kNoData;
    case ARES_EBADNAME: *error = "bad name"; return Status::kBadName;
    default: *error = ares_strerror(status); return Status::kTempFail;
  }
}

}  // namespace

struct Resolver::Impl {
  ev::Loop* loop = nullptr;
  ares_channel channel = nullptr;
  std::map<int, std::unique_ptr<ev::FdWatch>> watches;
  std::unique_ptr<ev::Timer> timer;
  std::unique_ptr<ev::Timer> defer;  // runs callbacks that must not run inline
  std::vector<std::function<void()>> deferred;

  static void sock_state(void* data, ares_socket_t fd, int readable, int writable) {
    auto* self = static_cast<Impl*>(data);
    if (!readable && !writable) {
      self->watches.erase(fd);
      return;
    }
    auto& w = self->watches[fd];
    if (!w) w = std::make_unique<ev::FdWatch>(*self->loop, fd);
    int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    w->start(events, [self, fd](int status, int ev) {
      ares_socket_t r = (status < 0 || (ev & UV_READABLE)) ? fd : ARES_SOCKET_BAD;
      ares_socket_t wr = (status < 0 || (ev & UV_WRITABLE)) ? fd : ARES_SOCKET_BAD;
      ares_process_fd(self->channel, r, wr);
      self->arm_timer();
    });
  }

  void arm_timer() {
    timeval tv;
    timeval* t = ares_timeout(channel, nullptr, &tv);
    if (!t) {
      timer->stop();
      return;
    }
    uint64_t ms = static_cast<uint64_t>(t->tv_sec) * 1000 + static_cast<uint64_t>(t->tv_usec) / 1000 + 1;
    timer->start(ms, [this] {
      ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      arm_timer();
    });
  }

  void later(std::function<void()> fn) {
    deferred.push_back(std::move(fn));
    defer->start(0, [this] {
      auto fns = std::move(deferred);
      deferred.clear();
      for (auto& f : fns) f();
    });
  }

  // One query; the parser turns the raw answer into an Answer.
  using Parser = std::function<void(const unsigned char*, int, Answer&)>;
  struct Query {
    Impl* impl;
    Parser parse;
    Callback cb;
  };

  void query(const std::string& name, int type, Parser parse, Callback cb) {
    if (!valid_hostname(name) && type != ns_t_ptr) {
      Answer a;
      a.status = Status::kBadName;
      a.error = "bad name";
      later([cb, a] { cb(a); });
      return;
    }
    auto* q = new Query{this, std::move(parse), std::move(cb)};
    ares_query(channel, name.c_str(), ns_c_in, type,
               [](void* arg, int status, int, unsigned char* abuf, int alen) {
                 std::unique_ptr<Query> q(static_cast<Query*>(arg));
                 Answer a;
                 a.status = classify(status, &a.error);
                 if (a.status == Status::kOk) {
                   q->parse(abuf, alen, a);
                 }
                 if (status == ARES_EDESTRUCTION) return;  // the resolver is going away
                 // c-ares may call back from inside ares_query (cached failures):
                 // never run the caller's callback inline.
                 auto cb = std::move(q->cb);
                 q->impl->later([cb = std::move(cb), a] { cb(a); });
               },
               q);
    arm_timer();
  }
};

Resolver::Resolver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Resolver::~Resolver() {
  if (impl_->channel) ares_destroy(impl_->channel);
}

Result<std::unique_ptr<Resolver>> Resolver::create(ev::Loop& loop, Options options) {
  std::call_once(g_ares_once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
  auto impl = std::make_unique<Impl>();
  impl->loop = &loop;
  impl->timer = std::make_unique<ev::Timer>(loop);
  impl->defer = std::make_unique<ev::Timer>(loop);
  ares_options o{};
  o.sock_state_cb = &Impl::sock_state;
  o.sock_state_cb_data = impl.get();
  o.timeout = static_cast<int>(options.timeout_ms);
  o.tries = options.tries;
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  int rc = ares_init_options(&impl->channel, &o, mask);
  if (rc != ARES_SUCCESS) return make_error(ErrorKind::kTemp, std::string("DNS resolver: ") + ares_strerror(rc));
  if (!options.servers.empty()) {
    rc = ares_set_servers_ports_csv(impl->channel, options.servers.c_str());
    if (rc != ARES_SUCCESS) {
      return make_error(ErrorKind::kConfig, "DNS servers '" + options.servers + "': " + ares_strerror(rc));
    }
  }
  return std::unique_ptr<Resolver>(new Resolver(std::move(impl)));
}

void Resolver::cancel_all() { ares_cancel(impl_->channel); }

void Resolver::mx(const std::string& domain, Callback cb) {
  impl_->query(domain, ns_t_mx,
               [](const unsigned char* buf, int len, Answer& a) {
                 ares_mx_reply* mx = nullptr;
                 int rc = ares_parse_mx_reply(buf, len, &mx);
                 if (rc != ARES_SUCCESS) {
                   a.status = classify(rc, &a.error);
                   return;
                 }
                 for (ares_mx_reply* m = mx; m; m = m->next) {
                   std::string host = m->host ? m->host : "";
                   if (host == ".") host.clear();
                   a.mx.push_back({m->priority, host});
                 }
                 ares_free_data(mx);
                 std::stable_sort(a.mx.begin(), a.mx.end(),
                                  [](const Mx& x, const Mx& y) { return x.preference < y.preference; });
                 if (a.mx.empty()) {
                   a.status = Status::kNoData;
                   a.error = "no MX records";
                 }
               },
               std::move(cb));
}

void Resolver::addresses(const std::string& host, bool ipv4, bool ipv6, Callback cb) {
  struct Pair {
    Answer v4, v6;
    int left = 0;
    Callback cb;
  };
  auto p = std::make_shared<Pair>();
  p->cb = std::move(cb);
  p->left = (ipv4 ? 1 : 0) + (ipv6 ? 1 : 0);
  if (p->left == 0) p->left = 1, ipv4 = true;
  auto finish = [p] {
    if (--p->left > 0) return;
    Answer a;
    a.addresses = p->v4.addresses;
    a.addresses.insert(a.addresses.end(), p->v6.addresses.begin(), p->v6.addresses.end());
    if (!a.addresses.empty()) {
      a.status = Status::kOk;
    } else if (p->v4.status == Status::kTempFail || p->v6.status == Status::kTempFail) {
      // No address, and one lookup failed: we do not know yet.
      a.status = Status::kTempFail;
      a.error = p->v4.status == Status::kTempFail ? p->v4.error : p->v6.error;
    } else if (p->v4.status == Status::kNxDomain || p->v6.status == Status::kNxDomain) {
      a.status = Status::kNxDomain;
      a.error = "NXDOMAIN";
    } else if (p->v4.status == Status::kBadName || p->v6.status == Status::kBadName) {
      a.status = Status::kBadName;
      a.error = "bad name";
    } else {
      a.status = Status::kNoData;
      a.error = "no address records";
    }
    p->cb(a);
  };
  auto parse_addrs = [](int family) {
    return [family](const unsigned char* buf, int len, Answer& a) {
      hostent* he = nullptr;
      int rc = family == AF_INET ? ares_parse_a_reply(buf, len, &he, nullptr, nullptr)
                                 : ares_parse_aaaa_reply(buf, len, &he, nullptr, nullptr);
      if (rc != ARES_SUCCESS) {
        a.status = classify(rc, &a.error);
        return;
      }
      for (char** p = he->h_addr_list; p && *p; ++p) {
        char txt[INET6_ADDRSTRLEN];
        ::inet_ntop(family, *p, txt, sizeof txt);
        a.addresses.push_back(txt);
      }
      ares_free_hostent(he);
      if (a.addresses.empty()) a.status = Status::kNoData;
    };
  };
  if (ipv4) {
    impl_->query(host, ns_t_a, parse_addrs(AF_INET), [p, finish](const Answer& a) {
      p->v4 = a;
      finish();
    });
  } else {
    p->v4.status = Status::kNoData;
  }
  if (ipv6) {
    impl_->query(host, ns_t_aaaa, parse_addrs(AF_INET6), [p, finish](const Answer& a) {
      p->v6 = a;
      finish();
    });
  } else {
    p->v6.status = Status::kNoData;
  }
}

void Resolver::txt(const std::string& name, Callback cb) {
  impl_->query(name, ns_t_txt,
               [](const unsigned char* buf, int len, Answer& a) {
                 ares_txt_ext* txt = nullptr;
                 int rc = ares_parse_txt_reply_ext(buf, len, &txt);
                 if (rc != ARES_SUCCESS) {
                   a.status = classify(rc, &a.error);
                   return;
                 }
                 // A record may be split into several strings; record_start marks each
                 // record's first one. RFC 7208 3.3: the strings are concatenated.
                 for (ares_txt_ext* t = txt; t; t = t->next) {
                   std::string s(reinterpret_cast<const char*>(t->txt), t->length);
                   if (t->record_start || a.texts.empty()) a.texts.push_back(s); else a.texts.back() += s;
                 }
                 ares_free_data(txt);
                 if (a.texts.empty()) a.status = Status::kNoData;
               },
               std::move(cb));
}

void Resolver::ptr(const std::string& ip, Callback cb) {
  // The reverse name: d.c.b.a.in-addr.arpa or the nibbles of an IPv6 address.
  std::string name;
  in_addr a4;
  in6_addr a6;
  if (::inet_pton(AF_INET, ip.c_str(), &a4) == 1) {
    const auto* b = reinterpret_cast<const unsigned char*>(&a4);
    name = std::to_string(b[3]) + "." + std::to_string(b[2]) + "." + std::to_string(b[1]) + "." +
           std::to_string(b[0]) + ".in-addr.arpa";
  } else if (::inet_pton(AF_INET6, ip.c_str(), &a6) == 1) {
    static const char* hex = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
      name += hex[a6.s6_addr[i] & 15];
      name += '.';
      name += hex[a6.s6_addr[i] >> 4];
      name += '.';
    }
    name += "ip6.arpa";
  } else {
    Answer a;
    a.status = Status::kBadName;
    a.error = "not an IP address";
    impl_->later([cb, a] { cb(a); });
    return;
  }
  impl_->query(name, ns_t_ptr,
               [](const unsigned char* buf, int len, Answer& a) {
                 hostent* he = nullptr;
                 int rc = ares_parse_ptr_reply(buf, len, nullptr, 0, AF_INET, &he);
                 if (rc != ARES_SUCCESS) {
                   a.status = classify(rc, &a.error);
                   return;
                 }
                 if (he->h_name) a.names.push_back(he->h_name);
                 for (char** p = he->h_aliases; p && *p; ++p) a.names.push_back(*p);
                 ares_free_hostent(he);
                 if (a.names.empty()) a.status = Status::kNoData;
               },
               std::move(cb));
}

}  // namespace tern::common::dns
