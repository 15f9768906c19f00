// One LMTP (RFC 2033) conversation: the protocol state machine of tern-mda.
//
// No socket here: bytes come in through on_input(), replies go out through the
// `write` callback, and the two things that need the outside world are asked of the
// Host asynchronously: the userdb lookup at RCPT (tern-authd's USER) and the final
// delivery after the end of data (Maildir/mbox on the threadpool). So the policy is
// testable with a fake Host and no socket (tests/unit/mda/lmtp_session_test.cc).
//
// Ordering: commands are handled strictly in order, one at a time. While a lookup or
// a delivery is pending, further pipelined input stays buffered and reading from the
// peer is paused (Host::pause), so a client that pipelines a thousand RCPTs cannot
// make us buffer without bound, and replies always come out in command order
// (RFC 2920).
//
// After the end of data there is one reply per accepted recipient, in RCPT order
// (RFC 2033 4.2), each only after that recipient's copy is durable (fsynced).
//
// Untrusted input and its bounds: a command line is at most kMaxLine bytes (RFC 5321
// 4.5.3.1.4 asks for 512; Postfix's line_length_limit is 2048); a message at most
// lmtp_message_size_limit bytes (excess is read and dropped, then 552 5.3.4); at most
// lmtp_recipient_limit recipients; lmtp_hard_error_limit errors end the session. A
// bare LF or bare CR (in a command or in DATA) is handled as Postfix's
// smtpd_forbid_bare_newline = yes (see common/smtp_data.h): the message is refused
// with 550 5.5.2 and the connection closed, so no smuggled command is ever run.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/line_reader.h"
#include "common/result.h"
#include "common/smtp_command.h"
#include "common/smtp_data.h"
#include "mda/delivery.h"
#include "mda/spool.h"

namespace tern::mda {

// One recipient's delivery, handed to the Host.
struct DeliveryJob {
  MailUser user;
  Envelope envelope;
};

class LmtpSession : public std::enable_shared_from_this<LmtpSession> {
 public:
  static constexpr size_t kMaxLine = 2048;

  struct Options {
    std::string hostname = "localhost";
    std::string peer = "unknown";        // for Received: and logs ("local" for a UNIX socket)
    uint64_t size_limit = 100u << 20;    // 0: none
    size_t recipient_limit = 1000;
    int hard_error_limit = 20;
    bool forbid_bare_newline = true;
    std::string recipient_delimiter = "+";
    bool save_to_detail_mailbox = true;
    std::string temp_dir = "/tmp";
    std::vector<std::string> local_domains;  // where a user may be looked up by local part alone
  };

  class Host {
   public:
    virtual ~Host() = default;
    virtual void write(std::string_view bytes) = 0;
    virtual void close() = 0;                 // flush and close
    virtual void pause(bool paused) = 0;      // stop/start reading from the peer
    using LookupDone = std::function<void(common::Result<MailUser>)>;
    virtual void lookup(const std::string& user, LookupDone done) = 0;
    using DeliverDone = std::function<void(std::vector<Outcome>)>;
    // Delivers the spooled message to every job; done gets one Outcome per job in
    // order. The spool stays alive until done runs.
    virtual void deliver(std::shared_ptr<const MessageSpool> body, std::vector<DeliveryJob> jobs, DeliverDone done) = 0;
    // XTERN-DELIVERY-ID (mda/delivery_ids.h): whether the host remembers deliveries
    // by id; whether this (id, recipient) was delivered before (to `user`); record
    // new ones. A delivery whose Outcome says key_recorded has recorded its pair
    // itself (in the user's mailbox index, with the UID); the others are recorded
    // with record_delivered().
    virtual bool delivery_ids() const { return false; }
    virtual bool delivered_before(const std::string& id, const MailUser& user, const std::string& recipient) {
      (void)id;
      (void)user;
      (void)recipient;
      return false;
    }
    // Records (id, recipient) pairs durably, off the event loop; done runs on the
    // loop with the outcome.
    using RecordDone = std::function<void(common::Status)>;
    virtual void record_delivered(const std::string& id, const std::vector<std::string>& recipients,
                                  RecordDone done) {
      (void)id;
      (void)recipients;
      done({});
    }
  };

  LmtpSession(Options options, Host* host, std::string session_id);
  // Sends the greeting.
  void start();
  // Bytes from the peer.
  void on_input(std::string_view bytes);
  // The peer went away: nothing further is written; a pending delivery still finishes.
  void on_closed();
  // An idle timeout.
  void on_timeout();

  const std::string& id() const { return id_; }
  bool closed() const { return closed_; }

 private:
  enum class State { kCommand, kData, kBdat, kClosed };
  struct Rcpt {
    std::string address;   // as given, without brackets: for Delivered-To and replies
    MailUser user;
    std::string detail;
  };
  void pump();
  void command(std::string_view line);
  void reply(const common::smtp::Reply& r);
  void error_reply(const common::smtp::Reply& r);
  void do_mail(common::smtp::Command& c);
  void do_rcpt(common::smtp::Command& c);
  void do_data();
  void do_bdat(const common::smtp::Command& c);
  void end_of_message();
  void reply_all(const common::smtp::Reply& r);
  void reset_transaction();
  void busy(bool b);
  void close_now();
  std::string received_header(const Rcpt& r) const;

  Options opt_;
  Host* host_;
  std::string id_;
  common::LineReader reader_{kMaxLine};
  State state_ = State::kCommand;
  bool busy_ = false;
  bool closed_ = false;
  bool in_pump_ = false;
  int errors_ = 0;
  std::string helo_;
  // Transaction.
  bool have_mail_ = false;
  std::string sender_;
  common::smtp::MailParams mail_params_;
  std::vector<Rcpt> rcpts_;
  std::shared_ptr<MessageSpool> spool_;
  common::smtp::DataReader data_;
  uint64_t bdat_left_ = 0;
  bool bdat_last_ = false;
  bool bdat_bad_ = false;               // BDAT without a valid transaction: read and drop
  common::smtp::LineEndings bdat_endings_;
  uint64_t messages_ = 0;
};

}  // namespace tern::mda
