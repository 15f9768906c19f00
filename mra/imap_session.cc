#include "mra/imap_session.h"

#include <algorithm>
#include <map>
#include <set>

#include "common/mime.h"
#include "common/mime_charset.h"
#include "common/text.h"
#include "mra/imap_mailbox_name.h"
#include "mra/imap_mutf7.h"
#include "mra/imap_parser.h"
#include "mra/imap_search.h"

namespace tern::mra::imap {

namespace mime = tern::common::mime;
using tern::common::Error;
using tern::common::ErrorKind;
using tern::common::iequals;
using tern::common::make_error;

namespace {

constexpr const char* kSystemFlags[] = {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"};

// A flag as the store keeps it: system flags in their canonical spelling, keywords
// as sent. nullopt for \Recent (the client cannot set it, RFC 3501 2.3.2) and for
// unknown "\" flags (no flag-extension is supported).
std::optional<std::string> canonical_flag(std::string_view f) {
  if (f.empty()) return std::nullopt;
  if (f[0] != '\\') return std::string(f);
  for (const char* s : kSystemFlags) {
    if (iequals(f, s)) return std::string(s);
  }
  return std::nullopt;
}

std::optional<std::vector<std::string>> canonical_flags(const std::vector<std::string>& in, std::string& bad) {
  std::vector<std::string> out;
  for (const std::string& f : in) {
    std::optional<std::string> c = canonical_flag(f);
    if (!c) {
      bad = f;
      return std::nullopt;
    }
    if (std::find(out.begin(), out.end(), *c) == out.end()) out.push_back(std::move(*c));
  }
  return out;
}

const char* response_code(ErrorKind k) {
  switch (k) {
    case ErrorKind::kNotFound: return "NONEXISTENT";
    case ErrorKind::kExists: return "ALREADYEXISTS";
    case ErrorKind::kNoQuota: return "OVERQUOTA";
    case ErrorKind::kDenied: return "NOPERM";
    case ErrorKind::kInUse: return "INUSE";
    case ErrorKind::kTooBig: return "TOOBIG";
    case ErrorKind::kLimit: return "LIMIT";
    case ErrorKind::kTemp: return "UNAVAILABLE";
    case ErrorKind::kProtocol: return "CANNOT";
    default: return "SERVERBUG";
  }
}

const char* short_text(ErrorKind k) {
  switch (k) {
    case ErrorKind::kNotFound: return "Mailbox doesn't exist";
    case ErrorKind::kExists: return "Mailbox already exists";
    case ErrorKind::kNoQuota: return "Quota exceeded";
    case ErrorKind::kDenied: return "Permission denied";
    case ErrorKind::kInUse: return "Mailbox is in use";
    case ErrorKind::kTooBig: return "Too big";
    case ErrorKind::kLimit: return "Limit reached";
    case ErrorKind::kTemp: return "Temporary failure, try again later";
    default: return "Internal error occurred";
  }
}

const char* special_use_attr(SpecialUse u) {
  switch (u) {
    case SpecialUse::kDrafts: return "\\Drafts";
    case SpecialUse::kJunk: return "\\Junk";
    case SpecialUse::kSent: return "\\Sent";
    case SpecialUse::kTrash: return "\\Trash";
    case SpecialUse::kArchive: return "\\Archive";
    case SpecialUse::kNone: break;
  }
  return nullptr;
}

bool is_plaintext_mechanism(std::string_view m) { return m == "PLAIN" || m == "LOGIN"; }

// "1:3,7" from UIDs in a given order, keeping the order (COPYUID pairs its source and
// destination sets element by element, RFC 4315 3).
std::string ordered_set(const std::vector<uint32_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(v[i]);
    if (j > i) out += ":" + std::to_string(v[j]);
    i = j + 1;
  }
  return out;
}

// The message as a SearchMessage for the evaluator, loading its text on demand.
class ViewSearchMessage : public SearchMessage {
 public:
  ViewSearchMessage(uint32_t seq, const MessageMeta& meta, bool recent, Mailbox& mbox)
      : seq_(seq), meta_(meta), recent_(recent), mbox_(mbox) {}
  uint32_t seq() const override { return seq_; }
  uint32_t uid() const override { return meta_.uid; }
  const std::vector<std::string>& flags() const override { return meta_.flags; }
  bool recent() const override { return recent_; }
  uint64_t size() const override { return meta_.size; }
  int64_t internal_date() const override { return meta_.internal_date; }
  int internal_date_zone() const override { return meta_.internal_date_zone; }
  uint64_t modseq() const override { return meta_.modseq; }
  const mime::Message* message() override {
    if (!loaded_) {
      loaded_ = true;
      Result<std::string> r = mbox_.read(meta_.uid);
      if (r.ok()) msg_ = mime::Message::parse(mime::to_crlf(r.value()));
    }
    return msg_ ? &*msg_ : nullptr;
  }

 private:
  uint32_t seq_;
  const MessageMeta& meta_;
  bool recent_;
  Mailbox& mbox_;
  bool loaded_ = false;
  std::optional<mime::Message> msg_;
};

// Converts every string of a search program from `charset` to UTF-8.
bool convert_search_strings(SearchKey& key, const std::string& charset) {
  if (!key.str.empty()) {
    std::optional<std::string> s = mime::to_utf8(charset, key.str);
    if (!s) return false;
    key.str = std::move(*s);
  }
  for (SearchKey& c : key.children) {
    if (!convert_search_strings(c, charset)) return false;
  }
  return true;
}

bool uses_modseq(const SearchKey& key) {
  if (key.op == SearchKey::Op::kModSeq) return true;
  for (const SearchKey& c : key.children) {
    if (uses_modseq(c)) return true;
  }
  return false;
}

}  // namespace

namespace {

// How much of a message a FETCH item needs parsed. Ordered: a deeper parse serves
// every shallower need.
enum class Depth {
  kHeader,  // the message's own header section (HEADER, HEADER.FIELDS, ENVELOPE)
  kRoot,    // the whole message, MIME structure not needed (BODY[], RFC822, TEXT)
  kFull,    // the MIME tree (part numbers, BODYSTRUCTURE, BINARY)
};

// What section_content() reads for an item: without a part number, HEADER* needs
// the header section only and TEXT / the whole message the root part; MIME and
// anything with a part number need the tree.
Depth depth_for(const FetchAtt& f) {
  using K = FetchAtt::Kind;
  using Spec = Section::Spec;
  if (f.kind == K::kRfc822Header) return Depth::kHeader;
  if (f.kind == K::kRfc822 || f.kind == K::kRfc822Text) return Depth::kRoot;
  if (f.kind != K::kBodySection || !f.section.part.empty()) return Depth::kFull;
  switch (f.section.spec) {
    case Spec::kHeader:
    case Spec::kHeaderFields:
    case Spec::kHeaderFieldsNot:
      return Depth::kHeader;
    case Spec::kNone:
    case Spec::kText:
      return Depth::kRoot;
    default:
      return Depth::kFull;
  }
}

}  // namespace

struct ImapSession::FetchJob {
  std::string tag;
  bool uid = false;
  std::vector<FetchAtt> atts;
  std::vector<uint32_t> seqs;
  size_t next = 0;
  bool set_seen = false;
  bool need_message = false;
  bool want_modseq = false;
  std::optional<uint64_t> changed_since;
  bool expunge_issued = false;
  bool unknown_cte = false;
};

ImapSession::ImapSession(SessionConfig config)
    : config_(std::move(config)), reader_(config_.login_limits), state_(State::kNotAuthenticated) {}

ImapSession::ImapSession(SessionConfig config, MailStore& store, std::string user)
    : config_(std::move(config)), reader_(config_.limits), state_(State::kAuthenticated), store_(&store),
      user_(std::move(user)) {
  ReaderLimits l = config_.limits;
  reader_.set_limits(l);
}

ImapSession::~ImapSession() = default;

std::string ImapSession::capabilities() const {
  std::string c = "IMAP4rev1 IMAP4rev2";
  if (state_ == State::kNotAuthenticated) {
    c += " SASL-IR LITERAL+ ID ENABLE IDLE";
    if (config_.starttls && !config_.tls) c += " STARTTLS";
    if (!plaintext_allowed()) c += " LOGINDISABLED";
    for (const std::string& m : config_.mechanisms) {
      if (is_plaintext_mechanism(m) && !plaintext_allowed()) continue;
      c += " AUTH=" + m;
    }
    return c;
  }
  c += " LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE LIST-EXTENDED LIST-STATUS"
       " STATUS=SIZE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE BINARY ESEARCH SEARCHRES CONDSTORE";
  c += " APPENDLIMIT=" + std::to_string(config_.limits.max_append);
  return c;
}

std::string ImapSession::greeting() const {
  return "* OK [CAPABILITY " + capabilities() + "] " + config_.server_name + " ready.\r\n";
}

std::string ImapSession::take_buffered() { return reader_.take_buffered(); }

std::string ImapSession::tagged(const std::string& tag, std::string_view status, std::string_view text) const {
  std::string out = tag.empty() ? std::string("*") : tag;
  out += ' ';
  out.append(status);
  out += ' ';
  out.append(text);
  out += "\r\n";
  return out;
}

ImapSession::Step ImapSession::bad(const std::string& tag, std::string_view text) {
  Step s;
  s.out = tagged(tag, "BAD", text);
  s.action = Action::kContinue;
  if (++bad_commands_ >= config_.max_bad_commands) {
    s.out += "* BYE Too many invalid IMAP commands.\r\n";
    state_ = State::kLogout;
    s.action = Action::kClose;
  }
  return s;
}

ImapSession::Step ImapSession::no(const std::string& tag, const Error& e, std::string_view context) {
  std::string text = "[" + std::string(response_code(e.kind)) + "] ";
  text.append(context);
  if (!context.empty()) text += ": ";
  text += e.kind == ErrorKind::kProtocol ? e.message : short_text(e.kind);
  std::string out;
  if (state_ == State::kSelected) out = sync_updates(true);
  return Step{out + tagged(tag, "NO", text), Action::kContinue};
}

ImapSession::Step ImapSession::finish(const std::string& tag, std::string out, const std::string& text,
                                      bool allow_expunge) {
  if (state_ == State::kSelected) out += sync_updates(allow_expunge);
  out += tagged(tag, "OK", text);
  if (state_ != State::kNotAuthenticated) bad_commands_ = 0;
  return Step{std::move(out), Action::kContinue};
}

ImapSession::Step ImapSession::step() {
  if (state_ == State::kLogout) return Step{"", Action::kClose};
  if (fetch_) return continue_fetch();
  switch (mode_) {
    case Mode::kIdle:
      return idle_input();
    case Mode::kAuthWait:
      return Step{"", Action::kNeedInput};  // input stays buffered until tern-authd answers
    case Mode::kAuthLine:
      return auth_input();
    case Mode::kCommands:
      break;
  }
  switch (reader_.next()) {
    case ImapReader::Status::kNeedMore:
      return Step{"", Action::kNeedInput};
    case ImapReader::Status::kContinue:
      return Step{"+ Ready for literal data\r\n", Action::kContinue};
    case ImapReader::Status::kLiteralRefused: {
      Step s{reader_.refusal() + "\r\n", Action::kContinue};
      if (++bad_commands_ >= config_.max_bad_commands) {
        s.out += "* BYE Too many invalid IMAP commands.\r\n";
        state_ = State::kLogout;
        s.action = Action::kClose;
      }
      return s;
    }
    case ImapReader::Status::kFatal:
      state_ = State::kLogout;
      return Step{"* BYE " + reader_.error() + "\r\n", Action::kClose};
    case ImapReader::Status::kSpoolStart:
      return spool_start();
    case ImapReader::Status::kSpoolData:
      if (spool_) {
        if (Status w = spool_->write(reader_.spool_data()); !w) {
          // The bytes still come; the command fails at its end (cmd_append).
          spool_error_ = w.error();
          spool_.reset();
        }
      }
      return Step{"", Action::kContinue};
    case ImapReader::Status::kCommand:
      break;
  }
  Step s = run_command(reader_.command());
  spool_.reset();  // not taken by an APPEND (a syntax error after the literal): dropped
  spool_error_.reset();
  return s;
}

ImapSession::Step ImapSession::spool_start() {
  spool_.reset();
  spool_error_.reset();
  const std::string tag(command_tag(reader_.command().text));
  Result<std::unique_ptr<Spool>> sp = store_ ? store_->begin_spool(reader_.spool_size())
                                             : Result<std::unique_ptr<Spool>>(make_error(ErrorKind::kTemp, "no store"));
  if (!sp) {
    const bool sync = reader_.spool_sync();
    Step refusal = no(tag.empty() ? "*" : tag, sp.error(), "");
    if (sync) {
      reader_.refuse_spool("");
      return refusal;  // the client sends nothing after a tagged NO instead of "+"
    }
    // Its bytes are coming: read and dropped, then this line (kLiteralRefused).
    std::string line = tagged(tag.empty() ? "*" : tag, "NO",
                              "[" + std::string(response_code(sp.error().kind)) + "] " +
                                  (sp.error().kind == ErrorKind::kProtocol ? sp.error().message
                                                                           : std::string(short_text(sp.error().kind))));
    if (line.size() >= 2 && line.compare(line.size() - 2, 2, "\r\n") == 0) line.resize(line.size() - 2);
    reader_.refuse_spool(std::move(line));
    return Step{"", Action::kContinue};
  }
  spool_ = std::move(sp).value();
  const bool sync = reader_.spool_sync();
  reader_.accept_spool();
  return Step{sync ? "+ Ready for literal data\r\n" : "", Action::kContinue};
}

ImapSession::Step ImapSession::run_command(const RawCommand& raw) {
  ParseResult r = parse_command(raw);
  if (auto* e = std::get_if<ParseError>(&r)) {
    return bad(e->tag, "Error in IMAP command: " + e->message);
  }
  return execute(std::get<Command>(r));
}

ImapSession::Step ImapSession::execute(Command& c) {
  using N = CommandName;
  // RFC 3501 6: which commands each state accepts.
  switch (c.name) {
    case N::kCapability: return cmd_capability(c);
    case N::kNoop: return finish(c.tag, "", "NOOP completed.");
    case N::kLogout: return cmd_logout(c);
    case N::kId: return cmd_id(c);
    default: break;
  }
  if (state_ == State::kNotAuthenticated) {
    switch (c.name) {
      case N::kStartTls: return cmd_starttls(c);
      case N::kLogin: return cmd_login(c);
      case N::kAuthenticate: return cmd_authenticate(c);
      default: return bad(c.tag, "Command not permitted before authentication.");
    }
  }
  switch (c.name) {
    case N::kStartTls:
    case N::kLogin:
    case N::kAuthenticate:
      return bad(c.tag, "Already authenticated.");
    case N::kEnable: return cmd_enable(c);
    case N::kSelect:
    case N::kExamine: return cmd_select(c);
    case N::kCreate: return cmd_create(c);
    case N::kDelete: return cmd_delete(c);
    case N::kRename: return cmd_rename(c);
    case N::kSubscribe:
    case N::kUnsubscribe: return cmd_subscribe(c);
    case N::kList:
    case N::kLsub: return cmd_list(c);
    case N::kNamespace: return cmd_namespace(c);
    case N::kStatus: return cmd_status(c);
    case N::kAppend: return cmd_append(c);
    case N::kIdle: return cmd_idle(c);
    case N::kGetQuota:
    case N::kGetQuotaRoot:
    case N::kSetQuota: return cmd_quota(c);
    default: break;
  }
  if (state_ != State::kSelected) return bad(c.tag, "No mailbox selected.");
  switch (c.name) {
    case N::kCheck: return finish(c.tag, "", "CHECK completed.");
    case N::kClose:
    case N::kUnselect: return cmd_close(c);
    case N::kExpunge: return cmd_expunge(c);
    case N::kSearch: return cmd_search(c);
    case N::kFetch: return cmd_fetch(c);
    case N::kStore: return cmd_store(c);
    case N::kCopy:
    case N::kMove: return cmd_copy(c);
    default: break;
  }
  return bad(c.tag, "Unknown command.");
}

// --- any state ------------------------------------------------------------------------

ImapSession::Step ImapSession::cmd_capability(Command& c) {
  return finish(c.tag, "* CAPABILITY " + capabilities() + "\r\n", "CAPABILITY completed.");
}

ImapSession::Step ImapSession::cmd_logout(Command& c) {
  std::string out = "* BYE Logging out\r\n" + tagged(c.tag, "OK", "LOGOUT completed.");
  deselect();
  state_ = State::kLogout;
  return Step{out, Action::kClose};
}

std::string ImapSession::bye(std::string_view reason) {
  state_ = State::kLogout;
  return "* BYE " + std::string(reason) + "\r\n";
}

ImapSession::Step ImapSession::cmd_id(Command& c) {
  client_id_ = std::get<IdArgs>(c.args).fields;
  std::string out = "* ID ";
  if (config_.id_name.empty()) {
    out += "NIL";
  } else {
    out += "(\"name\" ";
    append_string(out, config_.id_name);
    out += ")";
  }
  out += "\r\n";
  return finish(c.tag, out, "ID completed.");
}

// --- not authenticated ------------------------------------------------------------------

ImapSession::Step ImapSession::cmd_starttls(Command& c) {
  if (config_.tls) return bad(c.tag, "TLS is already active.");
  if (!config_.starttls) return bad(c.tag, "STARTTLS is not available.");
  // RFC 3501 6.2.1 / RFC 2595 3.1: anything pipelined after STARTTLS is discarded.
  reader_.clear();
  return Step{tagged(c.tag, "OK", "Begin TLS negotiation now."), Action::kStartTls};
}

void ImapSession::tls_started() {
  config_.tls = true;
  reader_.clear();
}

ImapSession::Step ImapSession::cmd_login(Command& c) {
  LoginArgs& a = std::get<LoginArgs>(c.args);
  if (!plaintext_allowed()) {
    return Step{tagged(c.tag, "NO", "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections."),
                Action::kContinue};
  }
  auth_ = AuthRequest{"PLAIN", std::string(1, '\0') + a.user + std::string(1, '\0') + a.password, true};
  // The password is in auth_ only until auth_result().
  std::fill(a.password.begin(), a.password.end(), '\0');
  pending_tag_ = c.tag;
  mode_ = Mode::kAuthWait;
  return Step{"", Action::kAuthenticate};
}

ImapSession::Step ImapSession::cmd_authenticate(Command& c) {
  AuthenticateArgs& a = std::get<AuthenticateArgs>(c.args);
  bool offered = std::find(config_.mechanisms.begin(), config_.mechanisms.end(), a.mechanism) != config_.mechanisms.end();
  if (!offered) return Step{tagged(c.tag, "NO", "Unsupported authentication mechanism."), Action::kContinue};
  if (is_plaintext_mechanism(a.mechanism) && !plaintext_allowed()) {
    return Step{tagged(c.tag, "NO", "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections."),
                Action::kContinue};
  }
  auth_ = AuthRequest{a.mechanism, std::nullopt, false};
  if (a.initial_response) {
    if (*a.initial_response == "=") {
      auth_.initial_response = std::string();
    } else {
      std::optional<std::string> d = tern::common::base64_decode(*a.initial_response);
      if (!d) return bad(c.tag, "Invalid base64 in initial response.");
      auth_.initial_response = std::move(*d);
    }
  }
  pending_tag_ = c.tag;
  mode_ = Mode::kAuthWait;
  return Step{"", Action::kAuthenticate};
}

std::string ImapSession::auth_challenge(std::string_view challenge) {
  mode_ = Mode::kAuthLine;
  return "+ " + tern::common::base64_encode(challenge) + "\r\n";
}

ImapSession::Step ImapSession::auth_input() {
  std::string line;
  ImapReader::Status st = reader_.next_line(line);
  if (st == ImapReader::Status::kNeedMore) return Step{"", Action::kNeedInput};
  if (st == ImapReader::Status::kFatal) {
    state_ = State::kLogout;
    return Step{"* BYE " + reader_.error() + "\r\n", Action::kClose};
  }
  mode_ = Mode::kCommands;
  if (line == "*") {
    // RFC 3501 6.2.2: the client cancels; the server answers BAD.
    return Step{tagged(pending_tag_, "BAD", "Authentication aborted by client."), Action::kAuthCancel};
  }
  std::optional<std::string> d = tern::common::base64_decode(line);
  if (!d) return Step{tagged(pending_tag_, "BAD", "Invalid base64 in authentication response."), Action::kAuthCancel};
  auth_response_ = std::move(*d);
  mode_ = Mode::kAuthWait;
  return Step{"", Action::kAuthenticate};
}

ImapSession::Step ImapSession::auth_result(bool ok, std::string_view user, bool temporary_failure) {
  mode_ = Mode::kCommands;
  std::fill(auth_response_.begin(), auth_response_.end(), '\0');
  auth_response_.clear();
  if (auth_.initial_response) std::fill(auth_.initial_response->begin(), auth_.initial_response->end(), '\0');
  auth_ = AuthRequest{};
  std::string tag = std::move(pending_tag_);
  pending_tag_.clear();
  if (ok) {
    state_ = State::kAuthenticated;
    user_ = std::string(user);
    reader_.set_limits(config_.limits);
    return Step{tagged(tag, "OK", "[CAPABILITY " + capabilities() + "] Logged in"), Action::kLoggedIn};
  }
  if (temporary_failure) {
    return Step{tagged(tag, "NO", "[UNAVAILABLE] Temporary authentication failure."), Action::kContinue};
  }
  Step s{tagged(tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed."), Action::kContinue};
  if (++auth_failures_ >= config_.max_auth_attempts) {
    s.out += "* BYE Too many invalid authentication attempts.\r\n";
    state_ = State::kLogout;
    s.action = Action::kClose;
  }
  return s;
}

void ImapSession::attach_store(MailStore& store, std::string user) {
  store_ = &store;
  user_ = std::move(user);
  if (state_ == State::kNotAuthenticated) state_ = State::kAuthenticated;
  reader_.set_limits(config_.limits);
}

// --- authenticated ------------------------------------------------------------------------

tern::common::Result<std::string> ImapSession::mailbox_from_client(const std::string& raw) const {
  std::string utf8;
  if (rev2_) {
    utf8 = raw;
  } else {
    std::optional<std::string> d = mutf7_decode(raw);
    if (!d) return make_error(ErrorKind::kProtocol, "Mailbox name is not valid modified UTF-7");
    utf8 = std::move(*d);
  }
  MailboxNameRules rules;
  rules.separator = config_.separator;
  return check_mailbox_name(utf8, rules);
}

std::string ImapSession::mailbox_to_client(const std::string& utf8) const {
  if (rev2_) return utf8;
  std::optional<std::string> e = mutf7_encode(utf8);
  return e ? *e : utf8;
}

void ImapSession::append_mailbox(std::string& out, const std::string& utf8) const {
  append_astring(out, mailbox_to_client(utf8), render_mode());
}

ImapSession::Step ImapSession::cmd_enable(Command& c) {
  if (state_ != State::kAuthenticated) return bad(c.tag, "ENABLE is only valid before SELECT.");
  std::string enabled;
  for (const std::string& cap : std::get<EnableArgs>(c.args).capabilities) {
    if (cap == "IMAP4REV2" && !rev2_) {
      rev2_ = true;
      enabled += " IMAP4rev2";
    } else if (cap == "CONDSTORE" && !condstore_) {
      condstore_ = true;
      enabled += " CONDSTORE";
    }
  }
  return finish(c.tag, "* ENABLED" + enabled + "\r\n", "ENABLE completed.");
}

ImapSession::Step ImapSession::cmd_namespace(Command& c) {
  std::string out = "* NAMESPACE ((\"\" ";
  append_string(out, std::string(1, config_.separator));
  out += ")) NIL NIL\r\n";
  return finish(c.tag, out, "NAMESPACE completed.");
}

void ImapSession::deselect() {
  mailbox_.reset();
  mailbox_name_.clear();
  view_.clear();
  saved_ = NumberSet();
  saved_valid_ = false;
  fetch_.reset();
  if (state_ == State::kSelected) state_ = State::kAuthenticated;
}

std::string ImapSession::flags_of(const MessageMeta& m, bool recent) const {
  std::vector<std::string> f = m.flags;
  if (recent && !rev2_) f.push_back("\\Recent");
  return format_flag_list(f);
}

std::vector<MessageMeta> ImapSession::meta_range(size_t first, size_t last) {
  std::vector<uint32_t> uids;
  uids.reserve(last - first);
  for (size_t i = first; i < last; ++i) {
    if (!view_[i].expunged) uids.push_back(view_[i].uid);
  }
  if (uids.empty()) return {};
  Result<std::vector<MessageMeta>> r = mailbox_->fetch_meta(uids);
  if (!r) return {};
  return std::move(r.value());
}

uint32_t ImapSession::seq_of(uint32_t uid) const {
  auto it = std::lower_bound(view_.begin(), view_.end(), uid, [](const ViewMsg& m, uint32_t u) { return m.uid < u; });
  if (it == view_.end() || it->uid != uid) return 0;
  return static_cast<uint32_t>(it - view_.begin()) + 1;
}

std::string ImapSession::flags_responses() const {
  std::vector<std::string> flags(std::begin(kSystemFlags), std::end(kSystemFlags));
  for (const std::string& k : announced_keywords_) {
    if (std::find(flags.begin(), flags.end(), k) == flags.end()) flags.push_back(k);
  }
  std::string out = "* FLAGS " + format_flag_list(flags) + "\r\n";
  if (read_only_) {
    out += "* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n";
  } else {
    flags.push_back("\\*");
    out += "* OK [PERMANENTFLAGS " + format_flag_list(flags) + "] Flags permitted.\r\n";
  }
  return out;
}

std::string ImapSession::keyword_updates() {
  if (!mailbox_) return "";
  // A keyword new to the mailbox (this session's STORE or APPEND, or another
  // session's) is announced with FLAGS and PERMANENTFLAGS (RFC 3501 7.2.6), as
  // Dovecot does, so clients that build their tag list from FLAGS learn it.
  // Only a new keyword is news: one no message carries any more may still be used.
  std::vector<std::string> now = mailbox_->keywords();
  bool added = false;
  for (const std::string& k : now) {
    if (std::find(announced_keywords_.begin(), announced_keywords_.end(), k) == announced_keywords_.end()) added = true;
  }
  if (!added) return "";
  announced_keywords_ = std::move(now);
  return flags_responses();
}

std::string ImapSession::sync_updates(bool allow_expunge) {
  if (!mailbox_) return "";
  std::string out = keyword_updates();
  Result<MailboxChanges> r = mailbox_->sync();
  if (r.ok()) {
    MailboxChanges& ch = r.value();
    for (uint32_t uid : ch.expunged) {
      if (uint32_t seq = seq_of(uid)) view_[seq - 1].expunged = true;
    }
    for (MessageMeta& m : ch.changed) {
      uint32_t seq = seq_of(m.uid);
      if (!seq || view_[seq - 1].expunged) continue;
      out += "* " + std::to_string(seq) + " FETCH (UID " + std::to_string(m.uid) + " FLAGS " +
             flags_of(m, view_[seq - 1].recent);
      if (condstore_) out += " MODSEQ (" + std::to_string(m.modseq) + ")";
      out += ")\r\n";
    }
    for (MessageMeta& m : ch.added) {
      if (!view_.empty() && m.uid <= view_.back().uid) continue;
      view_.push_back(ViewMsg{m.uid, m.recent, false});
    }
  }
  size_t expunged = 0;
  if (allow_expunge) {
    // Highest first, so each number is valid when it is sent.
    for (size_t i = view_.size(); i-- > 0;) {
      if (view_[i].expunged) {
        out += "* " + std::to_string(i + 1) + " EXPUNGE\r\n";
        ++expunged;
      }
    }
    if (expunged) {
      view_.erase(std::remove_if(view_.begin(), view_.end(), [](const ViewMsg& m) { return m.expunged; }),
                  view_.end());
    }
  }
  // Each EXPUNGE lowered the client's count by one; anything else is new messages.
  size_t client_count = announced_exists_ >= expunged ? announced_exists_ - expunged : 0;
  if (view_.size() != client_count) {
    out += "* " + std::to_string(view_.size()) + " EXISTS\r\n";
    // RECENT accompanies a change of size from new messages (RFC 3501 7.3.2), as
    // Dovecot sends it; IMAP4rev2 has no \Recent.
    if (!rev2_) {
      uint32_t recent = 0;
      for (const ViewMsg& m : view_) recent += m.recent ? 1 : 0;
      out += "* " + std::to_string(recent) + " RECENT\r\n";
    }
  }
  announced_exists_ = view_.size();
  return out;
}

std::string ImapSession::poll() {
  if (!mailbox_ || state_ != State::kSelected) return "";
  // RFC 3501 7.4.1: EXPUNGE only while a command (IDLE) is in progress.
  return sync_updates(mode_ == Mode::kIdle);
}

ImapSession::Step ImapSession::cmd_select(Command& c) {
  MailboxArgs& a = std::get<MailboxArgs>(c.args);
  bool examine = c.name == CommandName::kExamine;
  std::string out;
  if (mailbox_) {
    deselect();
    out += "* OK [CLOSED] Previous mailbox closed.\r\n";  // RFC 9051 7.1, RFC 7162 3.2.11
  }
  Result<std::string> name = mailbox_from_client(a.mailbox);
  if (!name) return Step{out + tagged(c.tag, "NO", "[CANNOT] " + name.error().message), Action::kContinue};
  Result<std::unique_ptr<Mailbox>> mb = store_->open(*name, examine ? OpenMode::kReadOnly : OpenMode::kReadWrite);
  if (!mb) {
    Step s = no(c.tag, mb.error(), "");
    s.out = out + s.out;
    return s;
  }
  Result<MailboxChanges> initial = mb.value()->sync();
  if (!initial) {
    Step s = no(c.tag, initial.error(), "");
    s.out = out + s.out;
    return s;
  }
  if (a.condstore) condstore_ = true;
  mailbox_ = std::move(mb.value());
  mailbox_name_ = *name;
  read_only_ = examine || mailbox_->read_only();
  state_ = State::kSelected;
  view_.clear();
  std::vector<MessageMeta>& all = initial.value().added;
  std::sort(all.begin(), all.end(), [](const MessageMeta& x, const MessageMeta& y) { return x.uid < y.uid; });
  uint32_t recent = 0;
  uint32_t first_unseen = 0;
  view_.reserve(all.size());
  for (const MessageMeta& m : all) {
    view_.push_back(ViewMsg{m.uid, m.recent, false});
    recent += m.recent ? 1 : 0;
    if (!first_unseen && !has_flag(m.flags, "\\Seen")) first_unseen = static_cast<uint32_t>(view_.size());
  }
  all.clear();
  all.shrink_to_fit();
  announced_exists_ = view_.size();
  announced_keywords_ = mailbox_->keywords();
  out += flags_responses();
  out += "* " + std::to_string(view_.size()) + " EXISTS\r\n";
  if (!rev2_) {
    out += "* " + std::to_string(recent) + " RECENT\r\n";
    if (first_unseen) out += "* OK [UNSEEN " + std::to_string(first_unseen) + "] First unseen.\r\n";
  }
  out += "* OK [UIDVALIDITY " + std::to_string(mailbox_->uid_validity()) + "] UIDs valid\r\n";
  out += "* OK [UIDNEXT " + std::to_string(mailbox_->uid_next()) + "] Predicted next UID\r\n";
  // RFC 7162 3.1.2.1: sent with every SELECT/EXAMINE of a mailbox with persistent
  // mod-sequences, CONDSTORE enabled or not (clients that do not know it ignore it).
  out += "* OK [HIGHESTMODSEQ " + std::to_string(mailbox_->highest_modseq()) + "] Highest\r\n";
  if (rev2_) {
    out += "* LIST () ";
    append_string(out, std::string(1, config_.separator));
    out += ' ';
    append_mailbox(out, mailbox_name_);
    out += "\r\n";
  }
  out += tagged(c.tag, "OK", read_only_ ? "[READ-ONLY] EXAMINE completed." : "[READ-WRITE] SELECT completed.");
  return Step{out, Action::kContinue};
}

ImapSession::Step ImapSession::cmd_create(Command& c) {
  std::string raw = std::get<MailboxArgs>(c.args).mailbox;
  // RFC 3501 6.3.3: a trailing separator declares the intent to create children.
  if (raw.size() > 1 && raw.back() == config_.separator) raw.pop_back();
  Result<std::string> name = mailbox_from_client(raw);
  if (!name) return no(c.tag, name.error(), "");
  if (*name == "INBOX") return no(c.tag, make_error(ErrorKind::kExists, ""), "");
  Status st = store_->create(*name);
  if (!st) return no(c.tag, st.error(), "");
  return finish(c.tag, "", "CREATE completed.");
}

ImapSession::Step ImapSession::cmd_delete(Command& c) {
  Result<std::string> name = mailbox_from_client(std::get<MailboxArgs>(c.args).mailbox);
  if (!name) return no(c.tag, name.error(), "");
  if (*name == "INBOX") return no(c.tag, make_error(ErrorKind::kProtocol, "INBOX can't be deleted"), "");
  if (mailbox_ && *name == mailbox_name_) {
    return no(c.tag, make_error(ErrorKind::kInUse, ""), "Can't delete the selected mailbox");
  }
  Status st = store_->remove(*name);
  if (!st) return no(c.tag, st.error(), "");
  return finish(c.tag, "", "DELETE completed.");
}

ImapSession::Step ImapSession::cmd_rename(Command& c) {
  RenameArgs& a = std::get<RenameArgs>(c.args);
  Result<std::string> from = mailbox_from_client(a.from);
  if (!from) return no(c.tag, from.error(), "");
  std::string to_raw = a.to;
  if (to_raw.size() > 1 && to_raw.back() == config_.separator) to_raw.pop_back();
  Result<std::string> to = mailbox_from_client(to_raw);
  if (!to) return no(c.tag, to.error(), "");
  if (*to == "INBOX") return no(c.tag, make_error(ErrorKind::kExists, ""), "");
  // Renaming a mailbox into its own subtree would make it its own ancestor.
  if (to->size() > from->size() && to->compare(0, from->size(), *from) == 0 && (*to)[from->size()] == config_.separator) {
    return no(c.tag, make_error(ErrorKind::kProtocol, "Can't rename a mailbox under itself"), "");
  }
  Status st = store_->rename(*from, *to);
  if (!st) return no(c.tag, st.error(), "");
  if (mailbox_ && mailbox_name_ == *from && *from != "INBOX") mailbox_name_ = *to;
  return finish(c.tag, "", "RENAME completed.");
}

ImapSession::Step ImapSession::cmd_subscribe(Command& c) {
  Result<std::string> name = mailbox_from_client(std::get<MailboxArgs>(c.args).mailbox);
  if (!name) return no(c.tag, name.error(), "");
  bool on = c.name == CommandName::kSubscribe;
  Status st = store_->subscribe(*name, on);
  if (!st) return no(c.tag, st.error(), "");
  return finish(c.tag, "", on ? "SUBSCRIBE completed." : "UNSUBSCRIBE completed.");
}

std::string ImapSession::status_items(const std::vector<std::string>& items, const MailboxStatus& st) const {
  std::string out;
  for (const std::string& it : items) {
    if (!out.empty()) out += ' ';
    out += it + " ";
    if (it == "MESSAGES") {
      out += std::to_string(st.messages);
    } else if (it == "RECENT") {
      out += std::to_string(st.recent);
    } else if (it == "UIDNEXT") {
      out += std::to_string(st.uid_next);
    } else if (it == "UIDVALIDITY") {
      out += std::to_string(st.uid_validity);
    } else if (it == "UNSEEN") {
      out += std::to_string(st.unseen);
    } else if (it == "SIZE") {
      out += std::to_string(st.size);
    } else if (it == "DELETED") {
      out += std::to_string(st.deleted);
    } else if (it == "HIGHESTMODSEQ") {
      out += std::to_string(st.highest_modseq);
    } else if (it == "APPENDLIMIT") {
      out += std::to_string(config_.limits.max_append);
    }
  }
  return out;
}

ImapSession::Step ImapSession::cmd_status(Command& c) {
  StatusArgs& a = std::get<StatusArgs>(c.args);
  Result<std::string> name = mailbox_from_client(a.mailbox);
  if (!name) return no(c.tag, name.error(), "");
  Result<MailboxStatus> st = store_->status(*name);
  if (!st) return no(c.tag, st.error(), "");
  if (std::find(a.items.begin(), a.items.end(), "HIGHESTMODSEQ") != a.items.end()) condstore_ = true;
  std::string out = "* STATUS ";
  append_mailbox(out, *name);
  out += " (" + status_items(a.items, st.value()) + ")\r\n";
  return finish(c.tag, out, "STATUS completed.");
}

ImapSession::Step ImapSession::cmd_list(Command& c) {
  ListArgs& a = std::get<ListArgs>(c.args);
  const char sep = config_.separator;
  std::string sep_str;
  append_string(sep_str, std::string(1, sep));
  if (!a.lsub && !a.extended && a.patterns.size() == 1 && a.patterns[0].empty()) {
    // RFC 3501 6.3.8: an empty pattern asks for the hierarchy delimiter.
    return finish(c.tag, "* LIST (\\Noselect) " + sep_str + " \"\"\r\n", "LIST completed.");
  }
  Result<std::vector<MailboxInfo>> listed = store_->list();
  if (!listed) return no(c.tag, listed.error(), "");

  struct Entry {
    bool exists = false;
    bool noselect = false;
    bool subscribed = false;
    bool has_children = false;
    bool child_subscribed = false;
    SpecialUse use = SpecialUse::kNone;
  };
  std::map<std::string, Entry> all;
  auto add_parents = [&](const std::string& name, bool subscribed_leaf) {
    for (size_t p = name.find(sep); p != std::string::npos; p = name.find(sep, p + 1)) {
      Entry& e = all[name.substr(0, p)];
      e.has_children = true;
      if (subscribed_leaf) e.child_subscribed = true;
    }
  };
  for (const MailboxInfo& m : listed.value()) {
    Entry& e = all[m.name];
    e.exists = !m.nonexistent;
    e.noselect = m.noselect;
    e.subscribed = m.subscribed;
    e.use = m.special_use;
  }
  for (const MailboxInfo& m : listed.value()) {
    if (!m.nonexistent) {
      add_parents(m.name, m.subscribed);
      continue;
    }
    // A subscription alone gives its parents no children, only a subscribed one.
    for (size_t p = m.name.find(sep); p != std::string::npos; p = m.name.find(sep, p + 1)) {
      all[m.name.substr(0, p)].child_subscribed = true;
    }
  }

  bool want_subscribed = a.lsub || a.select_subscribed;
  std::vector<std::string> patterns;
  for (const std::string& p : a.patterns) patterns.push_back(list_pattern(a.reference, p));
  auto matches = [&](const std::string& name) {
    std::string client = mailbox_to_client(name);
    for (const std::string& p : patterns) {
      if (list_match(p, client, sep)) return true;
    }
    return false;
  };
  std::set<std::string> matched;
  for (auto& [name, e] : all) {
    if (matches(name)) matched.insert(name);
  }
  // A mailbox that exists only as a parent is shown when the pattern hides its
  // children ("%" at the top of "a/b"), so the client learns of the hierarchy
  // (RFC 3501 6.3.8); with "*" its children speak for it.
  auto descendant_matched = [&](const std::string& name) {
    std::string prefix = name + sep;
    auto it = matched.lower_bound(prefix);
    return it != matched.end() && it->compare(0, prefix.size(), prefix) == 0;
  };
  // LSUB: a subscribed mailbox below `name` that the pattern returns itself.
  auto subscribed_descendant_matched = [&](const std::string& name) {
    std::string prefix = name + sep;
    for (auto it = matched.lower_bound(prefix); it != matched.end() && it->compare(0, prefix.size(), prefix) == 0; ++it) {
      if (all[*it].subscribed) return true;
    }
    return false;
  };
  std::string out;
  for (auto& [name, e] : all) {
    if (!matched.count(name)) continue;
    if (!e.exists && !want_subscribed && (descendant_matched(name) || !e.has_children)) continue;
    std::vector<std::string> attrs;
    std::string extra;
    bool noselect = !e.exists || e.noselect;
    if (want_subscribed) {
      if (!e.subscribed) {
        // LSUB (RFC 3501 6.3.9) shows an unsubscribed parent of subscribed mailboxes
        // as \Noselect when the pattern hides them ("%" returns foo, not foo/bar);
        // LIST (SUBSCRIBED RECURSIVEMATCH) shows it with CHILDINFO.
        if (a.lsub && e.child_subscribed && !subscribed_descendant_matched(name)) {
          noselect = true;
        } else if (a.select_recursive && e.child_subscribed) {
          extra = " (\"CHILDINFO\" (\"SUBSCRIBED\"))";
        } else {
          continue;
        }
      }
    }
    if (a.select_special_use && e.use == SpecialUse::kNone) continue;
    if (!e.exists && a.extended) {
      attrs.push_back("\\NonExistent");  // implies \Noselect (RFC 5258 3)
    } else if (noselect) {
      attrs.push_back("\\Noselect");
    }
    if (!a.lsub) {
      // A name that is only a subscription has no children to speak of.
      if (e.exists || e.has_children) attrs.push_back(e.has_children ? "\\HasChildren" : "\\HasNoChildren");
      if (e.subscribed && (a.return_subscribed || a.select_subscribed)) attrs.push_back("\\Subscribed");
      if (const char* su = special_use_attr(e.use)) attrs.push_back(su);
    }
    out += a.lsub ? "* LSUB " : "* LIST ";
    out += format_flag_list(attrs) + " " + sep_str + " ";
    append_mailbox(out, name);
    out += extra + "\r\n";
    if (!a.return_status.empty() && e.exists && !e.noselect) {
      Result<MailboxStatus> st = store_->status(name);
      if (st) {
        out += "* STATUS ";
        append_mailbox(out, name);
        out += " (" + status_items(a.return_status, st.value()) + ")\r\n";
      }
    }
  }
  return finish(c.tag, out, a.lsub ? "LSUB completed." : "LIST completed.");
}

ImapSession::Step ImapSession::cmd_append(Command& c) {
  AppendArgs& a = std::get<AppendArgs>(c.args);
  Result<std::string> name = mailbox_from_client(a.mailbox);
  if (!name) return no(c.tag, name.error(), "");
  if (a.spooled && !spool_) {
    return no(c.tag, spool_error_ ? *spool_error_ : make_error(ErrorKind::kTemp, "spool lost"), "");
  }
  if (!a.spooled && a.message.empty()) {
    return no(c.tag, make_error(ErrorKind::kProtocol, "Can't save an empty message"), "");
  }
  if (a.message.size() > config_.limits.max_append) {
    return Step{tagged(c.tag, "NO", "[TOOBIG] Message too big."), Action::kContinue};
  }
  std::vector<std::string> flags;
  for (const std::string& f : a.flags) {
    if (iequals(f, "\\Recent")) continue;  // RFC 3501 2.3.2: set by the server only
    std::optional<std::string> cf = canonical_flag(f);
    if (!cf) return bad(c.tag, "Invalid flag " + f.substr(0, 64));
    if (std::find(flags.begin(), flags.end(), *cf) == flags.end()) flags.push_back(*cf);
  }
  std::optional<int64_t> date;
  if (a.internal_date) date = a.internal_date->to_unix();
  const std::optional<int64_t> when = date ? date : std::optional<int64_t>(config_.now());
  // A spooled message (ImapReader::spool_above) is in the store's tmp/ already: the
  // store renames it into place, no copy.
  Result<AppendResult> r = a.spooled ? store_->append_spool(*name, std::move(spool_), flags, when)
                                     : store_->append(*name, a.message, flags, when);
  if (!r) {
    if (r.error().kind == ErrorKind::kNotFound) {
      return Step{tagged(c.tag, "NO", "[TRYCREATE] Mailbox doesn't exist."), Action::kContinue};
    }
    return no(c.tag, r.error(), "");
  }
  return finish(c.tag, "",
                "[APPENDUID " + std::to_string(r->uid_validity) + " " + std::to_string(r->uid) + "] APPEND completed.");
}

ImapSession::Step ImapSession::cmd_idle(Command& c) {
  pending_tag_ = c.tag;
  mode_ = Mode::kIdle;
  std::string out = "+ idling\r\n";
  if (state_ == State::kSelected) out += sync_updates(true);
  // kContinue: a DONE already buffered is read by the next step(), which otherwise
  // answers kIdle.
  return Step{out, Action::kContinue};
}

ImapSession::Step ImapSession::idle_input() {
  std::string line;
  ImapReader::Status st = reader_.next_line(line);
  if (st == ImapReader::Status::kNeedMore) return Step{"", Action::kIdle};
  if (st == ImapReader::Status::kFatal) {
    state_ = State::kLogout;
    return Step{"* BYE " + reader_.error() + "\r\n", Action::kClose};
  }
  mode_ = Mode::kCommands;
  std::string tag = std::move(pending_tag_);
  pending_tag_.clear();
  if (!iequals(line, "DONE")) return bad(tag, "Expected DONE.");
  return finish(tag, "", "IDLE completed.");
}

ImapSession::Step ImapSession::cmd_quota(Command& c) {
  QuotaArgs& a = std::get<QuotaArgs>(c.args);
  if (c.name == CommandName::kSetQuota) {
    return Step{tagged(c.tag, "NO", "[NOPERM] Quota can't be changed over IMAP."), Action::kContinue};
  }
  Result<QuotaInfo> q = store_->quota();
  if (!q) return no(c.tag, q.error(), "");
  bool limited = q->storage_limit > 0 || q->messages_limit > 0;
  std::string quota_line = "* QUOTA \"\" (";
  bool first = true;
  if (q->storage_limit > 0) {
    // RFC 9208 5.1: STORAGE in units of 1024 octets.
    quota_line += "STORAGE " + std::to_string((q->storage_used + 1023) / 1024) + " " + std::to_string(q->storage_limit / 1024);
    first = false;
  }
  if (q->messages_limit > 0) {
    if (!first) quota_line += ' ';
    quota_line += "MESSAGE " + std::to_string(q->messages_used) + " " + std::to_string(q->messages_limit);
  }
  quota_line += ")\r\n";
  if (c.name == CommandName::kGetQuota) {
    if (!a.root.empty() || !limited) return Step{tagged(c.tag, "NO", "[NONEXISTENT] No such quota root."), Action::kContinue};
    return finish(c.tag, quota_line, "GETQUOTA completed.");
  }
  Result<std::string> name = mailbox_from_client(a.root);
  if (!name) return no(c.tag, name.error(), "");
  std::string out = "* QUOTAROOT ";
  append_mailbox(out, *name);
  if (limited) {
    out += " \"\"\r\n" + quota_line;
  } else {
    out += "\r\n";
  }
  return finish(c.tag, out, "GETQUOTAROOT completed.");
}

// --- selected ------------------------------------------------------------------------------

std::optional<std::vector<uint32_t>> ImapSession::resolve_seqs(const SequenceSet& set, bool uid,
                                                               std::string& error) const {
  std::vector<uint32_t> seqs;
  if (set.is_saved()) {
    // RFC 5182 2.1: "$" without a saved result is the empty set.
    if (saved_valid_) {
      for (uint32_t u : saved_.to_vector()) {
        if (uint32_t s = seq_of(u)) seqs.push_back(s);
      }
    }
    std::sort(seqs.begin(), seqs.end());
    return seqs;
  }
  auto n = static_cast<uint32_t>(view_.size());
  if (uid) {
    std::vector<uint32_t> uids;
    uids.reserve(view_.size());
    for (const ViewMsg& m : view_) uids.push_back(m.uid);
    NumberSet found = NumberSet::resolve(set, uids);
    for (auto& [a, b] : found.ranges()) {
      uint32_t s = seq_of(a);
      for (uint64_t u = a; u <= b; ++u, ++s) seqs.push_back(s);  // `found` holds only existing UIDs, in view order
    }
    return seqs;
  }
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  for (const SeqRange& r : set.ranges()) {
    uint32_t a = r.first == kStar ? n : r.first;
    uint32_t b = r.last == kStar ? n : r.last;
    // RFC 9051 6.4.5 (and 3501): a number beyond the mailbox is an error, "*" in an
    // empty mailbox included.
    if (a == 0 || b == 0 || a > n || b > n) {
      error = "Invalid messageset";
      return std::nullopt;
    }
    ranges.emplace_back(a, b);
  }
  NumberSet ns = NumberSet::from_ranges(std::move(ranges));
  seqs = ns.to_vector();
  return seqs;
}

ImapSession::Step ImapSession::cmd_close(Command& c) {
  bool expunge = c.name == CommandName::kClose && !read_only_;
  if (expunge) {
    // RFC 3501 6.4.2: CLOSE expunges silently.
    Result<std::vector<uint32_t>> r = mailbox_->expunge(std::nullopt);
    (void)r;
  }
  deselect();
  return Step{tagged(c.tag, "OK", c.name == CommandName::kClose ? "CLOSE completed." : "UNSELECT completed."),
              Action::kContinue};
}

ImapSession::Step ImapSession::cmd_expunge(Command& c) {
  if (read_only_) return Step{tagged(c.tag, "NO", "[READ-ONLY] Mailbox is read-only."), Action::kContinue};
  ExpungeArgs& a = std::get<ExpungeArgs>(c.args);
  std::optional<std::vector<uint32_t>> only;
  if (a.uids) {
    std::string err;
    std::optional<std::vector<uint32_t>> seqs = resolve_seqs(*a.uids, true, err);
    if (!seqs) return bad(c.tag, err);
    only.emplace();
    for (uint32_t s : *seqs) only->push_back(view_[s - 1].uid);
  }
  Result<std::vector<uint32_t>> r = mailbox_->expunge(only);
  if (!r) return no(c.tag, r.error(), "");
  return finish(c.tag, "", "EXPUNGE completed.");
}

ImapSession::Step ImapSession::cmd_search(Command& c) {
  SearchArgs& a = std::get<SearchArgs>(c.args);
  if (a.charset) {
    std::string cs = tern::common::to_lower(*a.charset);
    if (!mime::charset_supported(cs) || (cs != "utf-8" && cs != "us-ascii" && !convert_search_strings(a.key, cs))) {
      // RFC 5182 2.1: a SEARCH with SAVE answered NO empties "$" (one answered BAD,
      // a syntax error, leaves it as it was).
      if (a.ret_save) {
        saved_ = NumberSet();
        saved_valid_ = true;
      }
      return Step{tagged(c.tag, "NO", "[BADCHARSET (US-ASCII UTF-8)] Unknown charset."), Action::kContinue};
    }
  }
  bool modseq = uses_modseq(a.key);
  if (modseq) condstore_ = true;
  SearchContext ctx;
  ctx.max_seq = static_cast<uint32_t>(view_.size());
  ctx.max_uid = view_.empty() ? 0 : view_.back().uid;
  ctx.saved = saved_valid_ ? &saved_ : nullptr;
  ctx.now = config_.now();
  NumberSet result;  // sequence numbers or UIDs, as the response wants
  NumberSet result_uids;
  uint64_t max_modseq = 0;
  // In batches, so a search of a large mailbox holds a bounded amount of metadata.
  constexpr size_t kBatch = 1024;
  for (size_t first = 0; first < view_.size(); first += kBatch) {
    size_t last = std::min(view_.size(), first + kBatch);
    std::vector<MessageMeta> metas = meta_range(first, last);
    size_t i = first;
    for (const MessageMeta& meta : metas) {
      while (i < last && view_[i].uid != meta.uid) ++i;
      if (i == last) break;
      ViewSearchMessage sm(static_cast<uint32_t>(i + 1), meta, view_[i].recent, *mailbox_);
      if (search_matches(a.key, sm, ctx)) {
        result.add(c.uid ? meta.uid : static_cast<uint32_t>(i + 1));
        result_uids.add(meta.uid);
        max_modseq = std::max(max_modseq, meta.modseq);
      }
    }
  }
  std::string out;
  bool esearch = a.return_given || rev2_;
  if (a.ret_save) {
    // RFC 5182 2.4: SAVE with MIN and/or MAX (and neither ALL nor COUNT) saves only
    // the minimum and/or maximum; otherwise every match. UIDs grow with sequence
    // numbers, so the least UID is the least message.
    if ((a.ret_min || a.ret_max) && !a.ret_all && !a.ret_count) {
      saved_ = NumberSet();
      if (a.ret_min && result_uids.min()) saved_.add(*result_uids.min());
      if (a.ret_max && result_uids.max()) saved_.add(*result_uids.max());
    } else {
      saved_ = result_uids;
    }
    saved_valid_ = true;
  }
  if (esearch) {
    bool only_save = a.ret_save && !a.ret_min && !a.ret_max && !a.ret_all && !a.ret_count;
    if (!only_save) {
      out = "* ESEARCH (TAG ";
      append_string(out, c.tag);
      out += ")";
      if (c.uid) out += " UID";
      bool all = a.ret_all || !a.return_given;
      if (a.ret_min && result.min()) out += " MIN " + std::to_string(*result.min());
      if (a.ret_max && result.max()) out += " MAX " + std::to_string(*result.max());
      if (all && !result.empty()) out += " ALL " + result.to_string();
      if (a.ret_count) out += " COUNT " + std::to_string(result.count());
      if (modseq && !result.empty()) out += " MODSEQ " + std::to_string(max_modseq);
      out += "\r\n";
    }
  } else {
    out = "* SEARCH";
    for (uint32_t n : result.to_vector()) out += " " + std::to_string(n);
    if (modseq && !result.empty()) out += " (MODSEQ " + std::to_string(max_modseq) + ")";
    out += "\r\n";
  }
  return finish(c.tag, out, "SEARCH completed.", c.uid);
}

ImapSession::Step ImapSession::cmd_fetch(Command& c) {
  FetchArgs& a = std::get<FetchArgs>(c.args);
  if (a.vanished) return bad(c.tag, "VANISHED needs QRESYNC, which is not enabled.");
  std::string err;
  std::optional<std::vector<uint32_t>> seqs = resolve_seqs(a.set, c.uid, err);
  if (!seqs) return bad(c.tag, err);
  auto job = std::make_unique<FetchJob>();
  job->tag = c.tag;
  job->uid = c.uid;
  job->atts = std::move(a.atts);
  job->seqs = std::move(*seqs);
  job->changed_since = a.changed_since;
  using K = FetchAtt::Kind;
  for (const FetchAtt& f : job->atts) {
    switch (f.kind) {
      case K::kEnvelope: case K::kBody: case K::kBodyStructure: case K::kRfc822: case K::kRfc822Header:
      case K::kRfc822Text: case K::kBodySection: case K::kBinary: case K::kBinarySize:
        job->need_message = true;
        break;
      default:
        break;
    }
    bool sets_seen = (f.kind == K::kRfc822 || f.kind == K::kRfc822Text ||
                      ((f.kind == K::kBodySection || f.kind == K::kBinary) && !f.peek));
    if (sets_seen && !read_only_) job->set_seen = true;
    if (f.kind == K::kModSeq) job->want_modseq = true;
  }
  if (job->changed_since) {
    job->want_modseq = true;  // RFC 7162 3.1.4.1: CHANGEDSINCE implies MODSEQ
    condstore_ = true;
  }
  if (job->want_modseq) condstore_ = true;
  fetch_ = std::move(job);
  return continue_fetch();
}

ImapSession::Step ImapSession::continue_fetch() {
  FetchJob& job = *fetch_;
  using K = FetchAtt::Kind;
  Step s;
  while (job.next < job.seqs.size() && s.out.size() < config_.output_chunk) {
    // Metadata for a batch of messages in one call to the store.
    size_t batch_end = std::min(job.seqs.size(), job.next + 64);
    std::vector<uint32_t> uids;
    for (size_t k = job.next; k < batch_end; ++k) {
      const ViewMsg& bv = view_[job.seqs[k] - 1];
      if (!bv.expunged) uids.push_back(bv.uid);
    }
    std::vector<MessageMeta> metas;
    if (!uids.empty()) {
      Result<std::vector<MessageMeta>> r = mailbox_->fetch_meta(uids);
      if (r) metas = std::move(r.value());
    }
    size_t mi = 0;
    for (; job.next < batch_end && s.out.size() < config_.output_chunk; ++job.next) {
      uint32_t seq = job.seqs[job.next];
      const ViewMsg& v = view_[seq - 1];
      while (mi < metas.size() && metas[mi].uid < v.uid) ++mi;
      if (mi == metas.size() || metas[mi].uid != v.uid) {
        // Expunged by another session, not yet announced (RFC 5530 EXPUNGEISSUED).
        job.expunge_issued = true;
        continue;
      }
      MessageMeta& m = metas[mi];
      if (job.changed_since && m.modseq <= *job.changed_since) continue;
      // The message is read and parsed only as far as the items need (Depth): a
      // FETCH of headers reads the header section alone, BODY[] and TEXT skip the
      // MIME parse. A deeper need later in the list parses again, fully.
      std::optional<mime::Message> parsed;
      Depth parsed_depth = Depth::kHeader;
      bool load_failed = false;
      auto load = [&](Depth need) -> const mime::Message* {
        if (load_failed) return nullptr;
        if (parsed && parsed_depth >= need) return &*parsed;
        Result<std::string> r = need == Depth::kHeader ? mailbox_->read_header(m.uid) : mailbox_->read(m.uid);
        if (!r) {
          load_failed = true;
          return nullptr;
        }
        if (need == Depth::kHeader) {
          std::string_view raw = r.value();
          parsed = mime::Message::parse_header_only(mime::to_crlf(raw.substr(0, mime::header_section_end(raw))));
        } else if (need == Depth::kRoot) {
          parsed = mime::Message::parse_header_only(mime::to_crlf(r.value()));
        } else {
          parsed = mime::Message::parse(mime::to_crlf(r.value()));
        }
        parsed_depth = need;
        return &*parsed;
      };
      bool seen_changed = false;
      if (job.set_seen && !has_flag(m.flags, "\\Seen")) {
        Result<StoreResult> r = mailbox_->store({m.uid}, StoreMode::kAdd, {"\\Seen"}, std::nullopt);
        if (r && !r->updated.empty()) {
          m.flags = r->updated[0].flags;
          m.modseq = r->updated[0].modseq;
          seen_changed = true;
        }
      }
      // The response is written straight into the output (a body is copied once);
      // a message that cannot be fetched after all is cut off again.
      const size_t mark = s.out.size();
      s.out += "* ";
      s.out += std::to_string(seq);
      s.out += " FETCH (";
      const size_t items_start = s.out.size();
      std::string& items = s.out;
      bool failed = false;
      bool flags_done = false;
      bool modseq_done = false;
      auto sp = [&] {
        if (items.size() > items_start) items += ' ';
      };
      bool has_uid_att = std::any_of(job.atts.begin(), job.atts.end(), [](const FetchAtt& f) { return f.kind == K::kUid; });
      if (job.uid && !has_uid_att) items += "UID " + std::to_string(m.uid);
      RenderMode mode = render_mode();
      for (const FetchAtt& f : job.atts) {
        if (failed) break;
        switch (f.kind) {
          case K::kUid:
            sp();
            items += "UID " + std::to_string(m.uid);
            break;
          case K::kFlags:
            sp();
            items += "FLAGS " + flags_of(m, v.recent);
            flags_done = true;
            break;
          case K::kInternalDate:
            sp();
            items += "INTERNALDATE " + format_internal_date(m.internal_date, m.internal_date_zone);
            break;
          case K::kRfc822Size:
            sp();
            items += "RFC822.SIZE " + std::to_string(m.size);
            break;
          case K::kModSeq:
            sp();
            items += "MODSEQ (" + std::to_string(m.modseq) + ")";
            modseq_done = true;
            break;
          case K::kEnvelope:
          case K::kBody:
          case K::kBodyStructure: {
            const char* field = f.kind == K::kEnvelope ? "imap.envelope" : f.kind == K::kBody ? "imap.body" : "imap.bodystructure";
            const char* label = f.kind == K::kEnvelope ? "ENVELOPE " : f.kind == K::kBody ? "BODY " : "BODYSTRUCTURE ";
            // The cache holds the UTF-8-mode-independent rendering only for rev1.
            std::optional<std::string> cached = rev2_ ? std::nullopt : mailbox_->cache_get(m.uid, field);
            std::string value;
            if (cached) {
              value = std::move(*cached);
            } else {
              const mime::Message* msg = load(f.kind == K::kEnvelope ? Depth::kHeader : Depth::kFull);
              if (!msg) {
                failed = true;
                break;
              }
              if (f.kind == K::kEnvelope) {
                append_envelope(value, msg->root().header, mode);
              } else {
                append_body_structure(value, *msg, msg->root(), f.kind == K::kBodyStructure, mode);
              }
              if (!rev2_) mailbox_->cache_put(m.uid, field, value);
            }
            sp();
            items += label + value;
            break;
          }
          case K::kRfc822:
          case K::kRfc822Header:
          case K::kRfc822Text:
          case K::kBodySection: {
            const mime::Message* msg = load(depth_for(f));
            if (!msg) {
              failed = true;
              break;
            }
            Section sec = f.section;
            std::string label;
            if (f.kind == K::kRfc822) {
              label = "RFC822";
            } else if (f.kind == K::kRfc822Header) {
              label = "RFC822.HEADER";
              sec.spec = Section::Spec::kHeader;
            } else if (f.kind == K::kRfc822Text) {
              label = "RFC822.TEXT";
              sec.spec = Section::Spec::kText;
            } else {
              label = "BODY[" + sec.to_string() + "]";
              if (f.partial) label += "<" + std::to_string(f.partial->first) + ">";
            }
            SectionContent content = section_content(*msg, sec);
            sp();
            items += label + " ";
            if (!content.exists) {
              items += "NIL";
            } else {
              append_literal(items, apply_partial(content.data(), f.partial));
            }
            break;
          }
          case K::kBinary:
          case K::kBinarySize: {
            const mime::Message* msg = load(Depth::kFull);
            if (!msg) {
              failed = true;
              break;
            }
            BinaryContent bc = binary_content(*msg, f.section);
            if (bc.status == BinaryContent::Status::kUnknownCte) {
              job.unknown_cte = true;
              failed = true;
              break;
            }
            sp();
            if (f.kind == K::kBinarySize) {
              items += "BINARY.SIZE[" + f.section.to_string() + "] ";
              items += bc.status == BinaryContent::Status::kNoSection ? "0" : std::to_string(bc.data.size());
            } else {
              items += "BINARY[" + f.section.to_string() + "]";
              if (f.partial) items += "<" + std::to_string(f.partial->first) + ">";
              items += ' ';
              if (bc.status == BinaryContent::Status::kNoSection) {
                items += "NIL";
              } else {
                append_literal8(items, apply_partial(bc.data, f.partial));
              }
            }
            break;
          }
        }
      }
      if (failed) {
        s.out.resize(mark);
        if (load_failed) job.expunge_issued = true;
        continue;
      }
      if (seen_changed && !flags_done) {
        sp();
        items += "FLAGS " + flags_of(m, v.recent);
      }
      if (condstore_ && (job.want_modseq || seen_changed) && !modseq_done) {
        sp();
        items += "MODSEQ (" + std::to_string(m.modseq) + ")";
      }
      s.out += ")\r\n";
    }
  }
  if (job.next < job.seqs.size()) {
    s.action = Action::kContinue;
    return s;
  }
  std::unique_ptr<FetchJob> done = std::move(fetch_);
  s.action = Action::kContinue;  // pipelined commands may be waiting
  if (done->unknown_cte) {
    s.out += sync_updates(done->uid);
    s.out += tagged(done->tag, "NO", "[UNKNOWN-CTE] Can't decode the content transfer encoding.");
    return s;
  }
  if (done->expunge_issued) {
    s.out += sync_updates(done->uid);
    s.out += tagged(done->tag, "NO", "[EXPUNGEISSUED] Some messages were expunged and could not be fetched.");
    return s;
  }
  Step f = finish(done->tag, std::move(s.out), "FETCH completed.", done->uid);
  return f;
}

ImapSession::Step ImapSession::cmd_store(Command& c) {
  StoreArgs& a = std::get<StoreArgs>(c.args);
  if (read_only_) return Step{tagged(c.tag, "NO", "[READ-ONLY] Mailbox is read-only."), Action::kContinue};
  std::string bad_flag;
  std::optional<std::vector<std::string>> flags = canonical_flags(a.flags, bad_flag);
  if (!flags) return bad(c.tag, "Invalid flag " + bad_flag.substr(0, 64));
  std::string err;
  std::optional<std::vector<uint32_t>> seqs = resolve_seqs(a.set, c.uid, err);
  if (!seqs) return bad(c.tag, err);
  if (a.unchanged_since) condstore_ = true;
  std::vector<uint32_t> uids;
  for (uint32_t s : *seqs) {
    if (!view_[s - 1].expunged) uids.push_back(view_[s - 1].uid);
  }
  StoreMode mode = a.mode == StoreArgs::Mode::kAdd      ? StoreMode::kAdd
                   : a.mode == StoreArgs::Mode::kRemove ? StoreMode::kRemove
                                                        : StoreMode::kReplace;
  std::string out;
  NumberSet modified;
  if (!uids.empty()) {
    Result<StoreResult> r = mailbox_->store(uids, mode, *flags, a.unchanged_since);
    if (!r) return no(c.tag, r.error(), "");
    out += keyword_updates();  // before the FETCH responses that carry a new keyword
    for (const MessageMeta& m : r->updated) {
      uint32_t seq = seq_of(m.uid);
      if (!seq) continue;
      // RFC 7162 3.1.3: with UNCHANGEDSINCE, FETCH responses are sent even for .SILENT.
      if (a.silent && !a.unchanged_since) continue;
      out += "* " + std::to_string(seq) + " FETCH (";
      if (c.uid) out += "UID " + std::to_string(m.uid) + " ";
      out += "FLAGS " + flags_of(m, view_[seq - 1].recent);
      if (condstore_) out += " MODSEQ (" + std::to_string(m.modseq) + ")";
      out += ")\r\n";
    }
    for (uint32_t u : r->modified) {
      if (c.uid) {
        modified.add(u);
      } else if (uint32_t seq = seq_of(u)) {
        modified.add(seq);
      }
    }
  }
  std::string text = modified.empty() ? "STORE completed." : "[MODIFIED " + modified.to_string() + "] Conditional STORE failed.";
  return finish(c.tag, out, text, c.uid);
}

ImapSession::Step ImapSession::cmd_copy(Command& c) {
  CopyArgs& a = std::get<CopyArgs>(c.args);
  bool move = c.name == CommandName::kMove;
  if (move && read_only_) return Step{tagged(c.tag, "NO", "[READ-ONLY] Mailbox is read-only."), Action::kContinue};
  std::string err;
  std::optional<std::vector<uint32_t>> seqs = resolve_seqs(a.set, c.uid, err);
  if (!seqs) return bad(c.tag, err);
  Result<std::string> dest = mailbox_from_client(a.mailbox);
  if (!dest) return no(c.tag, dest.error(), "");
  std::vector<uint32_t> uids;
  bool expunged = false;
  for (uint32_t s : *seqs) {
    if (view_[s - 1].expunged) {
      expunged = true;
    } else {
      uids.push_back(view_[s - 1].uid);
    }
  }
  if (uids.empty()) {
    if (expunged) return Step{tagged(c.tag, "NO", "[EXPUNGEISSUED] Messages were expunged."), Action::kContinue};
    return finish(c.tag, "", move ? "MOVE completed." : "COPY completed.", c.uid);
  }
  Result<CopyResult> r = move ? mailbox_->move(uids, *dest) : mailbox_->copy(uids, *dest);
  if (!r) {
    if (r.error().kind == ErrorKind::kNotFound) {
      return Step{tagged(c.tag, "NO", "[TRYCREATE] Mailbox doesn't exist."), Action::kContinue};
    }
    return no(c.tag, r.error(), "");
  }
  std::string code = "COPYUID " + std::to_string(r->uid_validity) + " " + ordered_set(r->src_uids) + " " +
                     ordered_set(r->dst_uids);
  if (move) {
    // RFC 6851 4.3: COPYUID goes in an untagged OK, before the expunges.
    return finish(c.tag, "* OK [" + code + "] Moved UIDs.\r\n", "MOVE completed.", true);
  }
  return finish(c.tag, "", "[" + code + "] COPY completed.", c.uid);
}

}  // namespace tern::mra::imap
