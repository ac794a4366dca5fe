//! Building the few SQL statements the bootstrap sends, and SCRAM-SHA-256 verifiers.
//!
//! `CREATE ROLE ... PASSWORD` takes no bind parameter, so the password would have to be
//! spliced into the statement text, where `log_statement` or an error report could show
//! it. Instead we send a SCRAM-SHA-256 verifier (what the server would store anyway;
//! PostgreSQL accepts one in place of a password, see the `CREATE ROLE` docs): the
//! plaintext never leaves this process.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// `"name"` with embedded quotes doubled: safe for any role or database name.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal for `standard_conforming_strings = on` (the default since 9.1, and
/// what provisioning sets on its own session), where backslashes are not special, so
/// doubling single quotes is the whole job.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A fresh SCRAM-SHA-256 verifier for `password` (random salt, 4096 iterations), the same
/// format `password_encryption = scram-sha-256` stores in `pg_authid.rolpassword`.
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Whether a stored `rolpassword` verifies `password`, so provisioning only rewrites a
/// role's password when it actually changed (running it again changes nothing).
/// Anything that is not a SCRAM-SHA-256 verifier (md5, NULL) does not match.
pub fn verifier_matches(stored: &str, password: &str) -> bool {
    let Some(rest) = stored.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((params, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iterations, salt)) = params.split_once(':') else {
        return false;
    };
    let Some((stored_key, server_key)) = keys.split_once(':') else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(stored_key), Ok(server_key)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(stored_key),
        STANDARD.decode(server_key),
    ) else {
        return false;
    };
    if iterations == 0 {
        return false;
    }
    let salted = hi(&saslprep(password), &salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let computed_stored: Vec<u8> = Sha256::digest(&client_key).to_vec();
    constant_time_eq(&computed_stored, &stored_key)
        && constant_time_eq(&hmac(&salted, b"Server Key"), &server_key)
}

/// RFC 4013 SASLprep, skipped for strings it rejects, exactly as libpq and the server do.
fn saslprep(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(p) => p.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 5802 `Hi()`: PBKDF2-HMAC-SHA-256 producing one block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut prev = hmac(password, &first);
    let mut out = prev.clone();
    for _ in 1..iterations {
        prev = hmac(password, &prev);
        for (o, p) in out.iter_mut().zip(&prev) {
            *o ^= p;
        }
    }
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_their_quotes() {
        assert_eq!(quote_ident("agent"), r#""agent""#);
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_ident("Hive Genie"), r#""Hive Genie""#);
    }

    #[test]
    fn literals_double_their_quotes_and_keep_backslashes() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal(r"c:\x"), r"'c:\x'");
        // The opening quote, then the doubled one: the payload stays inside the literal.
        assert_eq!(
            quote_literal("'; DROP TABLE t; --"),
            "'''; DROP TABLE t; --'"
        );
    }

    #[test]
    fn known_verifier_from_postgres_protocol_matches() {
        // Test vector of postgres-protocol's own suite (salt 1..=16, password "secret").
        let v = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";
        assert!(verifier_matches(v, "secret"));
        assert!(!verifier_matches(v, "Secret"));
        assert!(!verifier_matches(v, ""));
    }

    #[test]
    fn fresh_verifiers_round_trip_and_hide_the_password() {
        for pw in ["pw", "pässwörd with spaces", "'quote\"s\\"] {
            let v = scram_verifier(pw);
            assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
            // A two-letter password turns up in random base64 now and then (about 1 run in
            // 40): only a password long enough not to appear by chance proves anything here.
            if pw.chars().count() >= 8 {
                assert!(!v.contains(pw));
            }
            assert!(verifier_matches(&v, pw));
            assert!(!verifier_matches(&v, "other"));
            // The verifier is safe inside a literal without any escaping.
            assert_eq!(quote_literal(&v), format!("'{v}'"));
        }
    }

    #[test]
    fn other_formats_never_match() {
        assert!(!verifier_matches(
            "md54ab2c5d00339c4b2a4e921d2dc4edec7",
            "secret"
        ));
        assert!(!verifier_matches("", "secret"));
        assert!(!verifier_matches(
            "SCRAM-SHA-256$0:AQ==$AA==:AA==",
            "secret"
        ));
        assert!(!verifier_matches("SCRAM-SHA-256$garbage", "secret"));
    }
}
