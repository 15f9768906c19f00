#include "mda/delivery_ids.h"

#include "common/log.h"
#include "common/text.h"

namespace tern::mda {

using common::Result;
using common::Status;
namespace lmdb = common::lmdb;

std::string delivery_key(const std::string& id, const std::string& recipient) {
  std::string k = id;
  k += '\0';
  k += common::to_lower(recipient);
  return k;
}

Result<std::unique_ptr<DeliveryIds>> DeliveryIds::open(const std::string& path, int64_t keep_s) {
  std::unique_ptr<DeliveryIds> d(new DeliveryIds);
  d->keep_s_ = keep_s;
  lmdb::Env::Options o;
  o.map_size = 8u << 20;
  o.flags = MDB_NOSUBDIR | MDB_NOTLS;
  Result<std::unique_ptr<lmdb::Env>> env = lmdb::Env::open(path, o);
  if (!env) return env.take_error();
  d->env_ = std::move(env).value();
  Status s = lmdb::write(*d->env_, [&](lmdb::Txn& t) -> Status {
    Result<MDB_dbi> db = t.open_db(nullptr, false);
    if (!db) return db.take_error();
    d->dbi_ = *db;
    return {};
  });
  if (!s) return s.take_error();
  d->group_ = std::make_unique<common::index::GroupCommit>(*d->env_);
  return d;
}

bool DeliveryIds::seen(const std::string& id, const std::string& recipient) {
  bool found = false;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& t) -> Status {
    Result<std::string_view> v = t.get(dbi_, delivery_key(id, recipient));
    found = v.ok();
    return {};
  });
  if (!s) common::log::warning("delivery ids: %s", s.error().message.c_str());
  return found;
}

Status DeliveryIds::record(const std::string& id, const std::vector<std::string>& recipients, int64_t now) {
  const std::string when = std::to_string(now);
  Status s = group_->write([&](lmdb::Txn& t) -> Status {
    for (const std::string& r : recipients) {
      if (Status p = t.put(dbi_, delivery_key(id, r), when); !p) return p;
    }
    return {};
  });
  // Prune now and then rather than on every delivery.
  if (s && ++writes_ % 1000 == 0) prune(now);
  return s;
}

void DeliveryIds::prune(int64_t now) {
  Status s = lmdb::write(*env_, [&](lmdb::Txn& t) -> Status {
    Result<lmdb::Cursor> c = lmdb::Cursor::open(t, dbi_);
    if (!c) return c.take_error();
    for (auto e = c->first(); e; e = c->next()) {
      std::optional<uint64_t> when = common::parse_u64(e->second);
      if (!when || static_cast<int64_t>(*when) + keep_s_ < now) {
        if (Status d = c->del(); !d) return d;
      }
    }
    return {};
  });
  if (!s) common::log::warning("delivery ids: prune: %s", s.error().message.c_str());
}

}  // namespace tern::mda
