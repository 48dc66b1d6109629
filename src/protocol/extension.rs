//! permessage-deflate negotiation (RFC 7692 section 7.1).
//!
//! Parses every offer of `Sec-WebSocket-Extensions` (several header lines,
//! comma-separated offers, quoted values), declines offers with unknown,
//! repeated or out-of-range parameters, and answers the first one the
//! server can honour, never with a parameter the client cannot accept.

/// Whether the server lets compression contexts outlive a message
/// (RFC 7692 sections 7.1.1.1-2). Which to choose is the server's memory
/// policy; this module only honours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// No context takeover either way, whatever the client offers (a
    /// server may always add both parameters).
    Never,
    /// Context takeover unless the client's offer declines it.
    AsOffered,
}

/// The parameters of one permessage-deflate offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateOffer {
    /// The client asks the server not to keep its compression context.
    pub server_no_context_takeover: bool,
    /// The client offers not to keep its own compression context.
    pub client_no_context_takeover: bool,
    /// The largest window the client's inflater accepts (8-15).
    pub server_max_window_bits: Option<u8>,
    /// `Some(None)`: the client can limit its window, no value given;
    /// `Some(Some(n))`: the client will use at most `n` (8-15).
    pub client_max_window_bits: Option<Option<u8>>,
}

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message, so the
    /// server's inflater can be reset (or shared) too.
    pub client_no_context_takeover: bool,
    /// The window the server's compressor must stay within (8-15).
    pub server_max_window_bits: u8,
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` value of the 101.
    pub fn response_header(&self) -> String {
        let mut out = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            out.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        out
    }

    /// Whether outgoing messages may be compressed at all: zlib cannot
    /// keep to a 256-byte window (it uses 512 when asked for 8), so a
    /// client that allows only 8 bits gets uncompressed messages, which
    /// RFC 7692 always permits.
    pub fn can_compress(&self) -> bool {
        self.server_max_window_bits >= 9
    }
}

/// Splits a header value at `sep`, outside double quotes.
fn split_outside_quotes(value: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// A window-bits value: 8-15, possibly quoted.
fn window_bits(value: &str) -> Option<u8> {
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    // RFC 7692 section 7.1.2: "a decimal integer value without leading zeroes".
    if value.len() > 2 || value.starts_with('0') {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Parses one offer's parameters; `None` declines it.
fn parse_params<'a>(params: impl Iterator<Item = &'a str>) -> Option<DeflateOffer> {
    let mut offer = DeflateOffer::default();
    let mut seen = [false; 4];
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (param.trim(), None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                offer.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if value.is_none() => {
                offer.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                offer.server_max_window_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                offer.client_max_window_bits = Some(match value {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
                3
            }
            _ => return None, // unknown parameter, or a value where none belongs
        };
        if std::mem::replace(&mut seen[index], true) {
            return None; // repeated parameter
        }
    }
    Some(offer)
}

/// Every well-formed permessage-deflate offer in the header values, in order.
pub fn parse_offers<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<DeflateOffer> {
    let mut offers = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for extension in split_outside_quotes(value, ',') {
            let mut parts = split_outside_quotes(extension, ';').into_iter();
            let name = parts.next().unwrap_or("").trim();
            if !name.eq_ignore_ascii_case("permessage-deflate") {
                continue;
            }
            if let Some(offer) = parse_params(parts.filter(|p| !p.trim().is_empty())) {
                offers.push(offer);
            }
        }
    }
    offers
}

/// Chooses the first offer the server can honour under `takeover`.
pub fn negotiate(offers: &[DeflateOffer], takeover: Takeover) -> Option<Deflate> {
    let offer = offers.first()?;
    let shared = takeover == Takeover::Never;
    Some(Deflate {
        // A server may always add these two (RFC 7692 sections 7.1.1.1-2).
        server_no_context_takeover: shared || offer.server_no_context_takeover,
        client_no_context_takeover: shared || offer.client_no_context_takeover,
        // Accepted with the offered value; our inflater always uses 15 bits,
        // which reads any client window, so client_max_window_bits is
        // never answered.
        server_max_window_bits: offer.server_max_window_bits.unwrap_or(15),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(values: &[&str]) -> Vec<DeflateOffer> {
        parse_offers(values.iter().map(|v| v.as_bytes()))
    }

    /// The answer in each `--compression` mode, as the server maps them.
    #[derive(Clone, Copy, PartialEq)]
    enum CompressionMode {
        Off,
        Shared,
        Dedicated,
    }

    fn answer(values: &[&str], mode: CompressionMode) -> Option<String> {
        let takeover = match mode {
            CompressionMode::Off => return None,
            CompressionMode::Shared => Takeover::Never,
            CompressionMode::Dedicated => Takeover::AsOffered,
        };
        negotiate(&offers(values), takeover).map(|d| d.response_header())
    }

    #[test]
    fn browser_offer_gets_no_context_takeover_both_ways_in_shared_mode() {
        assert_eq!(
            answer(
                &["permessage-deflate; client_max_window_bits"],
                CompressionMode::Shared
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
    }

    #[test]
    fn dedicated_mode_keeps_context_unless_asked() {
        let table = [
            ("permessage-deflate", "permessage-deflate"),
            (
                "permessage-deflate; server_no_context_takeover",
                "permessage-deflate; server_no_context_takeover",
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                "permessage-deflate; client_no_context_takeover",
            ),
            (
                "permessage-deflate; server_max_window_bits=10",
                "permessage-deflate; server_max_window_bits=10",
            ),
            (
                "permessage-deflate; client_max_window_bits=9",
                "permessage-deflate",
            ),
            (
                "permessage-deflate; server_max_window_bits=\"12\"; client_max_window_bits",
                "permessage-deflate; server_max_window_bits=12",
            ),
        ];
        for (offer, response) in table {
            assert_eq!(
                answer(&[offer], CompressionMode::Dedicated).as_deref(),
                Some(response),
                "{offer}"
            );
        }
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        ] {
            assert_eq!(offers(&[bad]), [], "{bad}");
            let both = format!("{bad}, permessage-deflate; server_max_window_bits=11");
            assert_eq!(
                answer(&[&both], CompressionMode::Dedicated).as_deref(),
                Some("permessage-deflate; server_max_window_bits=11"),
                "{bad}"
            );
        }
    }

    #[test]
    fn offers_across_several_headers_and_other_extensions() {
        let parsed = offers(&[
            "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=\"10\"",
            "permessage-deflate; server_no_context_takeover",
        ]);
        assert_eq!(
            parsed,
            [
                DeflateOffer {
                    client_max_window_bits: Some(Some(10)),
                    ..DeflateOffer::default()
                },
                DeflateOffer {
                    server_no_context_takeover: true,
                    ..DeflateOffer::default()
                }
            ]
        );
    }

    #[test]
    fn off_mode_and_no_offer_mean_no_extension() {
        assert_eq!(answer(&["permessage-deflate"], CompressionMode::Off), None);
        assert_eq!(answer(&["x-other"], CompressionMode::Shared), None);
        assert_eq!(answer(&[], CompressionMode::Shared), None);
    }

    #[test]
    fn eight_bit_server_window_is_accepted_but_never_compressed_to() {
        let d = negotiate(
            &offers(&["permessage-deflate; server_max_window_bits=8"]),
            Takeover::Never,
        )
        .unwrap();
        assert_eq!(d.server_max_window_bits, 8);
        assert!(!d.can_compress());
        assert!(d.response_header().ends_with("server_max_window_bits=8"));
    }
}
