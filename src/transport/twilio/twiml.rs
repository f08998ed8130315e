//! TwiML answering an incoming call by connecting it to our Media Stream.

/// Escapes text for an XML attribute value.
fn xml_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// `<Response><Connect><Stream url=…>` with one `<Parameter>` per pair.
/// Parameters reach us again in the stream's `start.customParameters`.
pub fn connect_stream(stream_url: &str, params: &[(&str, &str)]) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Connect>");
    x.push_str(&format!("<Stream url=\"{}\">", xml_attr(stream_url)));
    for (k, v) in params {
        x.push_str(&format!(
            "<Parameter name=\"{}\" value=\"{}\"/>",
            xml_attr(k),
            xml_attr(v)
        ));
    }
    x.push_str("</Stream></Connect></Response>\n");
    x
}

/// The answer of a node that cannot take the call now.
pub fn busy() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Say>Sorry, all our lines are busy right now. Please call again in a few minutes.</Say><Hangup/></Response>\n".to_string()
}

/// The `<Parameter>` pairs of a `<Stream>`, as a caller of our webhook
/// (the test client, a load test) reads them back.
pub fn stream_parameters(xml: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    };
    xml.split("<Parameter ")
        .skip(1)
        .filter_map(|p| {
            let attr = |name: &str| {
                let start = p.find(&format!("{name}=\""))? + name.len() + 2;
                let end = p[start..].find('"')? + start;
                Some(unescape(&p[start..end]))
            };
            Some((attr("name")?, attr("value")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_lists_parameters() {
        let x = connect_stream(
            "wss://h/twilio/stream",
            &[("From", "+1<2>"), ("Q", "a\"b&c")],
        );
        assert!(x.contains("<Stream url=\"wss://h/twilio/stream\">"));
        assert!(x.contains("<Parameter name=\"From\" value=\"+1&lt;2&gt;\"/>"));
        assert!(x.contains("value=\"a&quot;b&amp;c\""));
        assert_eq!(
            stream_parameters(&x),
            vec![
                ("From".to_string(), "+1<2>".to_string()),
                ("Q".to_string(), "a\"b&c".to_string())
            ]
        );
    }
}
