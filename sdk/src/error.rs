//! The host's `error-code` as `std::io::Error`.

use crate::ErrorCode;
use std::fmt;
use std::io;

/// What an `io::Error` made from an [`ErrorCode`] carries: the code, shown
/// by its WIT name (`closed`, `quota-exceeded`...), so that a guest's
/// `format!("send failed: {e}")` reads as the host's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostError(ErrorCode);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl std::error::Error for HostError {}

/// The `io::ErrorKind` of a code, for a failed `send`, `shutdown` or
/// `connect`. `closed` there means the write side is gone: `BrokenPipe`.
fn kind(code: ErrorCode) -> io::ErrorKind {
    match code {
        ErrorCode::Closed => io::ErrorKind::BrokenPipe,
        ErrorCode::Reset => io::ErrorKind::ConnectionReset,
        ErrorCode::TimedOut => io::ErrorKind::TimedOut,
        ErrorCode::Denied => io::ErrorKind::PermissionDenied,
        ErrorCode::Refused => io::ErrorKind::ConnectionRefused,
        ErrorCode::QuotaExceeded => io::ErrorKind::QuotaExceeded,
        ErrorCode::InvalidArgument => io::ErrorKind::InvalidInput,
        ErrorCode::ResourceLimit | ErrorCode::Other => io::ErrorKind::Other,
    }
}

impl From<ErrorCode> for io::Error {
    fn from(code: ErrorCode) -> io::Error {
        io::Error::new(kind(code), HostError(code))
    }
}

/// A failed `recv`: as any other, except that `closed` (the host closed the
/// connection under the guest, at shutdown) is `UnexpectedEof`: the stream
/// ended, though not at a clean end of stream (which `recv` reports as an
/// empty read, never as an error).
pub(crate) fn recv_error(code: ErrorCode) -> io::Error {
    match code {
        ErrorCode::Closed => io::Error::new(io::ErrorKind::UnexpectedEof, HostError(code)),
        code => code.into(),
    }
}

/// The host's code behind an `io::Error` that came from a connection,
/// [`dial`](crate::dial) or a [`Transport`](crate::Transport); `None` for any
/// other error.
pub fn error_code(err: &io::Error) -> Option<ErrorCode> {
    err.get_ref()?.downcast_ref::<HostError>().map(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names() {
        let cases = [
            (ErrorCode::Closed, io::ErrorKind::BrokenPipe, "closed"),
            (ErrorCode::Reset, io::ErrorKind::ConnectionReset, "reset"),
            (ErrorCode::TimedOut, io::ErrorKind::TimedOut, "timed-out"),
            (ErrorCode::Denied, io::ErrorKind::PermissionDenied, "denied"),
            (ErrorCode::Refused, io::ErrorKind::ConnectionRefused, "refused"),
            (ErrorCode::QuotaExceeded, io::ErrorKind::QuotaExceeded, "quota-exceeded"),
            (ErrorCode::ResourceLimit, io::ErrorKind::Other, "resource-limit"),
            (ErrorCode::InvalidArgument, io::ErrorKind::InvalidInput, "invalid-argument"),
            (ErrorCode::Other, io::ErrorKind::Other, "other"),
        ];
        for (code, kind, name) in cases {
            let err = io::Error::from(code);
            assert_eq!(err.kind(), kind, "{name}");
            assert_eq!(err.to_string(), name);
            assert_eq!(error_code(&err), Some(code));
        }
        assert_eq!(recv_error(ErrorCode::Closed).kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(recv_error(ErrorCode::Reset).kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(error_code(&io::Error::other("x")), None);
    }
}
