//! Exit codes, the same for every command, and the mapping from haven's errors to them.
//!
//! | code | meaning |
//! |-----:|---------|
//! | 0 | success |
//! | 1 | a definite "no": `get`/`del` of an absent key, a `cas` whose comparison failed, a failed demo check; `serve` and `bench`, which have no "no" answer, use it for any failure |
//! | 2 | usage or invalid argument (nothing was written) |
//! | 3 | unavailable: NOT applied (no member reachable, no leader, no quorum); safe to retry |
//! | 4 | timeout: MAY have been applied |
//! | 5 | authentication refused (wrong secret or cluster id) |
//! | 6 | any other failure (reading the secret file, a member's storage failure, a bad answer) |
//!
//! Every failure prints exactly one line on stderr, `haven CMD: message` ([`report`]).

use haven::{Error, ErrorCode};

/// Success.
pub const EXIT_OK: i32 = 0;
/// A definite negative answer: absent key, failed compare, failed check.
pub const EXIT_NO: i32 = 1;
/// Usage error or invalid argument (clap uses 2 for its own usage errors too).
pub const EXIT_USAGE: i32 = 2;
/// Not applied: nothing reachable, no leader, no quorum.
pub const EXIT_UNAVAILABLE: i32 = 3;
/// May have been applied.
pub const EXIT_TIMEOUT: i32 = 4;
/// The cluster refused our credentials.
pub const EXIT_AUTH: i32 = 5;
/// Anything else.
pub const EXIT_FAILED: i32 = 6;
/// `serve` and `bench` failed (they predate the table above and scripts check for 1).
pub const EXIT_RUN_FAILED: i32 = EXIT_NO;

/// The outcome of a command: an exit code and, unless it is 0, the one line to print.
pub type Outcome = std::result::Result<(), (i32, String)>;

/// The exit code for a failure of the crate's error kinds.
pub fn exit_code(e: &Error) -> i32 {
    match e.code() {
        ErrorCode::InvalidArgument => EXIT_USAGE,
        ErrorCode::Unavailable => EXIT_UNAVAILABLE,
        ErrorCode::Timeout => EXIT_TIMEOUT,
        ErrorCode::Auth => EXIT_AUTH,
        _ => EXIT_FAILED,
    }
}

/// An error as a command's outcome: its exit code and its message.
pub fn fail(e: Error) -> (i32, String) {
    (exit_code(&e), e.to_string())
}

/// Print `haven CMD: message` as one line on stderr (newlines in the message become spaces).
pub fn report(command: &str, message: &str) {
    let line: String = message
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    eprintln!("haven {command}: {line}");
}

/// Report a command's outcome: its one stderr line, if it failed, and its exit code.
pub fn finish(command: &str, outcome: Outcome) -> i32 {
    match outcome {
        Ok(()) => EXIT_OK,
        Err((code, message)) => {
            report(command, &message);
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_tell_absent_from_failed() {
        assert_eq!(exit_code(&Error::InvalidArgument(String::new())), 2);
        assert_eq!(exit_code(&Error::Unavailable(String::new())), 3);
        assert_eq!(exit_code(&Error::Timeout(String::new())), 4);
        assert_eq!(exit_code(&Error::Auth(String::new())), 5);
        assert_eq!(exit_code(&Error::Fatal(String::new())), 6);
        assert!(exit_code(&Error::io("x", std::io::Error::other("y"))) > EXIT_NO);
    }
}
