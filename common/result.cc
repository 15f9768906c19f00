#include "common/result.h"

#include <cstring>

namespace tern::common {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kTemp: return "temporary failure";
    case ErrorKind::kPerm: return "permanent failure";
    case ErrorKind::kNoQuota: return "over quota";
    case ErrorKind::kNotFound: return "not found";
    case ErrorKind::kInUse: return "in use";
    case ErrorKind::kLimit: return "limit reached";
    case ErrorKind::kTooBig: return "too big";
    case ErrorKind::kConfig: return "configuration error";
    case ErrorKind::kProtocol: return "protocol error";
    case ErrorKind::kDenied: return "permission denied";
    case ErrorKind::kExists: return "already exists";
    case ErrorKind::kMapFull: return "map full";
  }
  return "error";
}

Error errno_error(const std::string& what, int err) {
  ErrorKind kind = ErrorKind::kTemp;
  switch (err) {
    case ENOENT: kind = ErrorKind::kNotFound; break;
    case EACCES: case EPERM: kind = ErrorKind::kDenied; break;
    case EEXIST: kind = ErrorKind::kExists; break;
    case EDQUOT: kind = ErrorKind::kNoQuota; break;
    case EFBIG: kind = ErrorKind::kTooBig; break;
    default: break;
  }
  return Error{kind, what + ": " + std::strerror(err)};
}

}  // namespace tern::common
