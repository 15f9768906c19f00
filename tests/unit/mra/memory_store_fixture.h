// TEST FIXTURE: an in-memory MailStore for the unit tests of the IMAP and POP3
// session logic.
//
// It implements the MailStore/Mailbox contract of mra/mail_store.h with plain maps,
// so the sessions' protocol behaviour (sequence numbers, untagged updates between
// several sessions, UIDPLUS, CONDSTORE, POP3's deferred DELE) can be tested without
// disk. It is scaffolding for pure logic, not a stand-in for the daemon: the real
// store (Maildir++/mbox and the LMDB index) is tested with the daemon, over real
// sockets, with real clients. deliver() plays tern-mda's part.
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/mime.h"
#include "mra/mail_store.h"

namespace tern::mra::testing {

using tern::common::ErrorKind;
using tern::common::make_error;

class MemoryStore : public MailStore {
 public:
  struct Msg {
    uint32_t uid = 0;
    uint64_t modseq = 1;
    std::vector<std::string> flags;
    std::string data;
    int64_t date = 0;
    bool recent_claimed = false;  // some read-write session has seen it (\Recent given out)
  };
  struct Box {
    uint32_t uid_validity = 1;
    uint32_t uid_next = 1;
    uint64_t modseq = 1;
    std::vector<Msg> msgs;
    bool subscribed = false;
    SpecialUse use = SpecialUse::kNone;
    bool pop3_locked = false;
  };

  MemoryStore() {
    boxes_["INBOX"].subscribed = true;
    boxes_["INBOX"].uid_validity = 1700000000;
    for (auto [name, use] : {std::pair{"Drafts", SpecialUse::kDrafts}, {"Junk", SpecialUse::kJunk},
                             {"Sent", SpecialUse::kSent}, {"Trash", SpecialUse::kTrash}}) {
      Box& b = boxes_[name];
      b.use = use;
      b.subscribed = true;
      b.uid_validity = 1700000000 + static_cast<uint32_t>(boxes_.size());
    }
  }

  // Delivers a message, as tern-mda would. Returns its UID.
  uint32_t deliver(const std::string& box, std::string data, std::vector<std::string> flags = {}, int64_t date = 1700000000) {
    Box& b = boxes_.at(box);
    Msg m;
    m.uid = b.uid_next++;
    m.modseq = ++b.modseq;
    m.flags = std::move(flags);
    m.data = std::move(data);
    m.date = date;
    b.msgs.push_back(std::move(m));
    return b.msgs.back().uid;
  }
  Box& box(const std::string& name) { return boxes_.at(name); }
  bool has(const std::string& name) const { return boxes_.count(name) > 0; }
  void set_quota(QuotaInfo q) { quota_ = q; }
  // Reads fail with kTemp while set (an unreadable file).
  bool fail_reads = false;
  int full_reads = 0;    // Mailbox::read() calls
  int header_reads = 0;  // Mailbox::read_header() calls

  Result<std::vector<MailboxInfo>> list() override {
    std::vector<MailboxInfo> out;
    for (auto& [name, b] : boxes_) out.push_back(MailboxInfo{name, b.use, b.subscribed, false});
    return out;
  }
  Status create(const std::string& name) override {
    if (boxes_.count(name)) return make_error(ErrorKind::kExists, "exists");
    boxes_[name].uid_validity = 1800000000 + static_cast<uint32_t>(boxes_.size());
    return {};
  }
  Status remove(const std::string& name) override {
    if (!boxes_.count(name)) return make_error(ErrorKind::kNotFound, "no such mailbox");
    boxes_.erase(name);
    return {};
  }
  Status rename(const std::string& from, const std::string& to) override {
    if (!boxes_.count(from)) return make_error(ErrorKind::kNotFound, "no such mailbox");
    if (boxes_.count(to)) return make_error(ErrorKind::kExists, "exists");
    if (from == "INBOX") {  // RFC 3501 6.3.5: INBOX's messages move, INBOX stays
      Box& nb = boxes_[to];
      nb.uid_validity = 1900000000;
      for (Msg& m : boxes_["INBOX"].msgs) {
        Msg c = m;
        c.uid = nb.uid_next++;
        nb.msgs.push_back(c);
      }
      boxes_["INBOX"].msgs.clear();
      return {};
    }
    // Children move along.
    std::vector<std::string> names;
    for (auto& [n, b] : boxes_) {
      if (n == from || n.rfind(from + "/", 0) == 0) names.push_back(n);
    }
    for (const std::string& n : names) {
      Box b = boxes_[n];
      boxes_.erase(n);
      boxes_[to + n.substr(from.size())] = b;
    }
    return {};
  }
  Status subscribe(const std::string& name, bool on) override {
    if (!boxes_.count(name)) return make_error(ErrorKind::kNotFound, "no such mailbox");
    boxes_[name].subscribed = on;
    return {};
  }
  Result<std::unique_ptr<Mailbox>> open(const std::string& name, OpenMode mode) override;
  Result<MailboxStatus> status(const std::string& name) override {
    if (!boxes_.count(name)) return make_error(ErrorKind::kNotFound, "no such mailbox");
    Box& b = boxes_[name];
    MailboxStatus s;
    s.messages = static_cast<uint32_t>(b.msgs.size());
    s.uid_next = b.uid_next;
    s.uid_validity = b.uid_validity;
    s.highest_modseq = b.modseq;
    for (const Msg& m : b.msgs) {
      bool seen = std::find(m.flags.begin(), m.flags.end(), "\\Seen") != m.flags.end();
      bool del = std::find(m.flags.begin(), m.flags.end(), "\\Deleted") != m.flags.end();
      s.unseen += seen ? 0 : 1;
      s.deleted += del ? 1 : 0;
      s.recent += m.recent_claimed ? 0 : 1;
      s.size += tern::common::mime::to_crlf(m.data).size();
    }
    return s;
  }
  Result<AppendResult> append(const std::string& name, std::string_view message, const std::vector<std::string>& flags,
                              std::optional<int64_t> date) override {
    if (!boxes_.count(name)) return make_error(ErrorKind::kNotFound, "no such mailbox");
    if (quota_.storage_limit && quota_.storage_used + message.size() > quota_.storage_limit) {
      return make_error(ErrorKind::kNoQuota, "over quota");
    }
    uint32_t uid = deliver(name, std::string(message), flags, date.value_or(0));
    return AppendResult{boxes_[name].uid_validity, uid};
  }
  Result<QuotaInfo> quota() override { return quota_; }

 private:
  friend class MemoryMailbox;
  std::map<std::string, Box> boxes_;
  QuotaInfo quota_;
};

class MemoryMailbox : public Mailbox {
 public:
  MemoryMailbox(MemoryStore& store, std::string name, OpenMode mode) : store_(store), name_(std::move(name)), mode_(mode) {}
  ~MemoryMailbox() override {
    if (mode_ == OpenMode::kPop3 && store_.has(name_)) store_.box(name_).pop3_locked = false;
  }

  bool read_only() const override { return mode_ == OpenMode::kReadOnly; }
  uint32_t uid_validity() const override { return box().uid_validity; }
  uint32_t uid_next() const override { return box().uid_next; }
  uint64_t highest_modseq() const override { return box().modseq; }
  std::vector<std::string> keywords() const override {
    std::set<std::string> k;
    for (const auto& m : box().msgs) {
      for (const auto& f : m.flags) {
        if (!f.empty() && f[0] != '\\') k.insert(f);
      }
    }
    return {k.begin(), k.end()};
  }

  Result<MailboxChanges> sync() override {
    MailboxChanges ch;
    MemoryStore::Box& b = store_.box(name_);
    std::set<uint32_t> present;
    for (MemoryStore::Msg& m : b.msgs) {
      present.insert(m.uid);
      auto it = known_.find(m.uid);
      if (it == known_.end()) {
        MessageMeta meta = meta_of(m);
        if (!m.recent_claimed) {
          meta.recent = true;
          if (mode_ != OpenMode::kReadOnly) m.recent_claimed = true;
        }
        recent_.insert(m.uid);
        if (!meta.recent) recent_.erase(m.uid);
        known_[m.uid] = {m.flags, m.modseq};
        ch.added.push_back(meta);
      } else if (it->second.first != m.flags || it->second.second != m.modseq) {
        it->second = {m.flags, m.modseq};
        MessageMeta meta = meta_of(m);
        meta.recent = recent_.count(m.uid) > 0;
        ch.changed.push_back(meta);
      }
    }
    for (auto it = known_.begin(); it != known_.end();) {
      if (!present.count(it->first)) {
        ch.expunged.push_back(it->first);
        it = known_.erase(it);
      } else {
        ++it;
      }
    }
    return ch;
  }

  Result<std::vector<MessageMeta>> fetch_meta(const std::vector<uint32_t>& uids) override {
    ++meta_calls;
    std::vector<MessageMeta> out;
    const auto& msgs = box().msgs;
    size_t j = 0;
    for (uint32_t uid : uids) {
      while (j < msgs.size() && msgs[j].uid < uid) ++j;
      if (j < msgs.size() && msgs[j].uid == uid) out.push_back(meta_of(msgs[j]));
    }
    return out;
  }
  int meta_calls = 0;

  Result<std::string> read(uint32_t uid) override {
    ++store_.full_reads;
    if (store_.fail_reads) return make_error(ErrorKind::kTemp, "read failed");
    for (const MemoryStore::Msg& m : box().msgs) {
      if (m.uid == uid) return m.data;
    }
    return make_error(ErrorKind::kNotFound, "expunged");
  }

  // Like a real store's: the header section and a little of what follows (not the
  // whole message, so a session that used it for more than the header would fail).
  Result<std::string> read_header(uint32_t uid) override {
    ++store_.header_reads;
    --store_.full_reads;  // the read() below is not one
    Result<std::string> r = read(uid);
    if (!r) return r;
    size_t end = tern::common::mime::header_section_end(*r);
    return r->substr(0, std::min(r->size(), end + 3));
  }

  Result<StoreResult> store(const std::vector<uint32_t>& uids, StoreMode mode, const std::vector<std::string>& flags,
                            std::optional<uint64_t> unchanged_since) override {
    StoreResult r;
    MemoryStore::Box& b = store_.box(name_);
    for (uint32_t uid : uids) {
      for (MemoryStore::Msg& m : b.msgs) {
        if (m.uid != uid) continue;
        if (unchanged_since && m.modseq > *unchanged_since) {
          r.modified.push_back(uid);
          break;
        }
        std::vector<std::string> nf = m.flags;
        if (mode == StoreMode::kReplace) nf.clear();
        for (const std::string& f : flags) {
          auto pos = std::find(nf.begin(), nf.end(), f);
          if (mode == StoreMode::kRemove) {
            if (pos != nf.end()) nf.erase(pos);
          } else if (pos == nf.end()) {
            nf.push_back(f);
          }
        }
        if (nf != m.flags) {
          m.flags = nf;
          m.modseq = ++b.modseq;
        }
        known_[uid] = {m.flags, m.modseq};  // this handle made the change: no echo in sync()
        MessageMeta meta = meta_of(m);
        meta.recent = recent_.count(uid) > 0;
        r.updated.push_back(meta);
        break;
      }
    }
    return r;
  }

  Result<CopyResult> copy(const std::vector<uint32_t>& uids, const std::string& dest) override {
    if (!store_.has(dest)) return make_error(ErrorKind::kNotFound, "no such mailbox");
    CopyResult r;
    r.uid_validity = store_.box(dest).uid_validity;
    std::vector<MemoryStore::Msg> src = box().msgs;
    for (uint32_t uid : uids) {
      for (const MemoryStore::Msg& m : src) {
        if (m.uid != uid) continue;
        r.src_uids.push_back(uid);
        r.dst_uids.push_back(store_.deliver(dest, m.data, m.flags, m.date));
      }
    }
    return r;
  }

  Result<CopyResult> move(const std::vector<uint32_t>& uids, const std::string& dest) override {
    Result<CopyResult> r = copy(uids, dest);
    if (!r) return r;
    auto& msgs = store_.box(name_).msgs;
    msgs.erase(std::remove_if(msgs.begin(), msgs.end(),
                              [&](const MemoryStore::Msg& m) {
                                return std::find(uids.begin(), uids.end(), m.uid) != uids.end();
                              }),
               msgs.end());
    return r;
  }

  Result<std::vector<uint32_t>> expunge(const std::optional<std::vector<uint32_t>>& only) override {
    std::vector<uint32_t> gone;
    auto& msgs = store_.box(name_).msgs;
    msgs.erase(std::remove_if(msgs.begin(), msgs.end(),
                              [&](const MemoryStore::Msg& m) {
                                bool del = std::find(m.flags.begin(), m.flags.end(), "\\Deleted") != m.flags.end();
                                bool in = !only || std::find(only->begin(), only->end(), m.uid) != only->end();
                                if (del && in) gone.push_back(m.uid);
                                return del && in;
                              }),
               msgs.end());
    return gone;
  }

  std::optional<std::string> cache_get(uint32_t uid, std::string_view field) override {
    auto it = cache_.find(std::to_string(uid) + "/" + std::string(field));
    if (it == cache_.end()) return std::nullopt;
    ++cache_hits;
    return it->second;
  }
  void cache_put(uint32_t uid, std::string_view field, std::string_view value) override {
    cache_[std::to_string(uid) + "/" + std::string(field)] = std::string(value);
  }
  int cache_hits = 0;

 private:
  const MemoryStore::Box& box() const { return store_.box(name_); }
  static MessageMeta meta_of(const MemoryStore::Msg& m) {
    MessageMeta meta;
    meta.uid = m.uid;
    meta.modseq = m.modseq;
    meta.flags = m.flags;
    meta.size = tern::common::mime::to_crlf(m.data).size();
    meta.internal_date = m.date;
    return meta;
  }

  MemoryStore& store_;
  std::string name_;
  OpenMode mode_;
  std::map<uint32_t, std::pair<std::vector<std::string>, uint64_t>> known_;
  std::set<uint32_t> recent_;
  std::map<std::string, std::string> cache_;
};

inline Result<std::unique_ptr<Mailbox>> MemoryStore::open(const std::string& name, OpenMode mode) {
  if (!boxes_.count(name)) return make_error(ErrorKind::kNotFound, "no such mailbox");
  if (mode == OpenMode::kPop3) {
    if (boxes_[name].pop3_locked) return make_error(ErrorKind::kInUse, "locked by another POP3 session");
    boxes_[name].pop3_locked = true;
  }
  return std::unique_ptr<Mailbox>(new MemoryMailbox(*this, name, mode));
}

}  // namespace tern::mra::testing
