//! `X-Twilio-Signature` validation (HMAC-SHA1, base64), as Twilio documents
//! it: the full URL Twilio requested, followed — for form POSTs — by every
//! parameter name and value, sorted by name, concatenated without separators.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Computes the signature Twilio would send for `url` and `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Checks `signature` in constant time.
pub fn validate(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&given).is_ok()
}

/// The HMAC over the URL and the sorted parameters, not yet finalised.
fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut mac =
        HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

/// A stream token: the voice webhook hands one to Twilio as a `<Parameter>`
/// of the `<Stream>`, and the stream's `start` must bring it back. It binds
/// the stream to that CallSid and expires, so a captured upgrade signature
/// (which covers a fixed URL) cannot open further streams. The key derives
/// from the auth token, so any node of a cluster can check it.
pub fn stream_token(auth_token: &str, call_sid: &str, expires_unix_s: i64) -> String {
    format!(
        "{expires_unix_s}.{}",
        hex::encode(
            stream_mac(auth_token, call_sid, expires_unix_s)
                .finalize()
                .into_bytes()
        )
    )
}

fn stream_mac(auth_token: &str, call_sid: &str, expires_unix_s: i64) -> Hmac<sha2::Sha256> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(b"attendant-stream\0");
    mac.update(call_sid.as_bytes());
    mac.update(b"\0");
    mac.update(expires_unix_s.to_string().as_bytes());
    mac
}

/// Checks a stream token for `call_sid` at `now_unix_s`, in constant time.
pub fn stream_token_valid(auth_token: &str, call_sid: &str, token: &str, now_unix_s: i64) -> bool {
    let Some((exp, sig)) = token.split_once('.') else {
        return false;
    };
    let (Ok(exp), Ok(sig)) = (exp.parse::<i64>(), hex::decode(sig)) else {
        return false;
    };
    if call_sid.is_empty() || now_unix_s > exp {
        return false;
    }
    stream_mac(auth_token, call_sid, exp)
        .verify_slice(&sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    /// The worked example from Twilio's webhook-security documentation
    /// (and the twilio SDKs' test suites).
    #[test]
    fn twilio_documented_example() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        for (phone, expected) in [
            ("+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
            ("+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ] {
            let params = vec![
                p("CallSid", "CA1234567890ABCDE"),
                p("Caller", phone),
                p("Digits", "1234"),
                p("From", phone),
                p("To", "+18005551212"),
            ];
            assert_eq!(compute("12345", url, &params), expected);
            assert!(validate("12345", url, &params, expected));
        }
    }

    #[test]
    fn order_of_params_does_not_matter_but_values_do() {
        let a = vec![p("b", "2"), p("a", "1")];
        let b = vec![p("a", "1"), p("b", "2")];
        let s = compute("tok", "https://x/y", &a);
        assert!(validate("tok", "https://x/y", &b, &s));
        assert!(!validate(
            "tok",
            "https://x/y",
            &[p("a", "1"), p("b", "3")],
            &s
        ));
        assert!(!validate("other", "https://x/y", &b, &s));
        assert!(!validate("tok", "https://x/z", &b, &s));
        assert!(!validate("tok", "https://x/y", &b, "not base64!!"));
        assert!(!validate("tok", "https://x/y", &b, ""));
    }

    #[test]
    fn stream_tokens_bind_call_and_expire() {
        let t = stream_token("tok", "CA1", 1000);
        assert!(stream_token_valid("tok", "CA1", &t, 999));
        assert!(stream_token_valid("tok", "CA1", &t, 1000));
        assert!(!stream_token_valid("tok", "CA1", &t, 1001), "expired");
        assert!(!stream_token_valid("tok", "CA2", &t, 999), "other call");
        assert!(!stream_token_valid("other", "CA1", &t, 999), "other key");
        assert!(
            !stream_token_valid("tok", "CA1", "2000.00", 999),
            "forged expiry"
        );
        assert!(!stream_token_valid(
            "tok",
            "",
            &stream_token("tok", "", 9),
            1
        ));
        assert!(!stream_token_valid("tok", "CA1", "garbage", 1));
    }
}
