//! `X-Hub-Signature-256` (and the call webhook's `X-Herald-Signature-256`): HMAC-SHA256 of the
//! raw body with a secret, compared in constant time; and constant-time token comparison.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// True when `header` is `sha256=<64 hex>` and matches the body.
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Constant-time comparison of two byte strings (tokens); only the length may leak.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The header value for `body`, as Meta computes it (used by `herald simulate` and tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let body = include_bytes!("../../tests/fixtures/whatsapp/01-inbound-text.json");
        let header = sign(b"s3cret", body);
        assert_eq!(header.len(), 71);
        assert!(verify(b"s3cret", Some(&header), body));
    }

    #[test]
    fn tokens_are_equal_only_when_every_byte_is() {
        assert!(equal(b"token", b"token"));
        assert!(!equal(b"token", b"tokem"));
        assert!(!equal(b"token", b"token2"));
        assert!(!equal(b"", b"x"));
    }

    #[test]
    fn wrong_missing_or_malformed_signatures_fail() {
        let body = b"{}";
        let good = sign(b"s3cret", body);
        assert!(!verify(b"other", Some(&good), body));
        assert!(!verify(b"s3cret", None, body));
        assert!(!verify(b"s3cret", Some("sha1=abc"), body));
        assert!(!verify(b"s3cret", Some("sha256=zz"), body));
        assert!(!verify(b"s3cret", Some(&good[..70]), body));
        assert!(!verify(b"s3cret", Some(&good), b"{} "));
    }
}
