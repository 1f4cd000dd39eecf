//! What the controller refuses for its size, and how it says so.
//!
//! tonic answers a request over `max_decoding_message_size` with OutOfRange; gRPC's
//! own servers (and clients' retry logic) use ResourceExhausted for it, so the answer
//! is rewritten here, on its way out, with a message that names the limit.

use http::Response;
use tonic::{Code, Status};

/// Largest request the controller decodes: a plan is at most 1 MiB of YAML, so twice
/// that leaves room for any structured form of it.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// tonic's message for a request over the limit (tonic 0.14, codec/decode.rs).
const TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's OutOfRange for an over-limit request into ResourceExhausted.
/// Unary calls that fail before the handler answer with the status in the headers
/// ("trailers-only"), which is where this looks.
pub fn resource_exhausted_when_too_large<B>(mut response: Response<B>) -> Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != Code::OutOfRange || !status.message().starts_with(TOO_LARGE) {
        return response;
    }
    let detail = status
        .message()
        .trim_start_matches(TOO_LARGE)
        .trim_start_matches(':')
        .trim();
    let status = Status::from(crate::error::Error::OverLimit(format!(
        "request too large ({detail}); send a smaller message: a plan is at most 1 MiB"
    )));
    let headers = response.headers_mut();
    headers.remove("grpc-message");
    if status.add_header(headers).is_ok() {
        response.extensions_mut().insert(status);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_too_large_answer_is_rewritten() {
        let answer = |status: Status| {
            let r = resource_exhausted_when_too_large(status.into_http::<()>());
            Status::from_header_map(r.headers()).expect("a status")
        };
        let s = answer(Status::out_of_range(
            "Error, decoded message length too large: found 3145733 bytes, the limit is: 2097152 bytes",
        ));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "request too large (found 3145733 bytes, the limit is: 2097152 bytes); send a smaller message: a plan is at most 1 MiB"
        );
        let s = answer(Status::out_of_range("wave 7 does not exist"));
        assert_eq!(s.code(), Code::OutOfRange, "an OutOfRange of our own is kept");
        let s = answer(Status::invalid_argument("Error, decoded message length too large"));
        assert_eq!(s.code(), Code::InvalidArgument);
    }
}
