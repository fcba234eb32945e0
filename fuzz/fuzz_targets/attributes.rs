//! Parses what arrives in attributes and sealed payloads: the sealed attribute list,
//! key names, trust patterns and base64. Properties: no panics; a sealed list that
//! parses re-encodes to exactly the same bytes (the list is canonical: strictly
//! ascending keys); base64 and seal times are strict (what decodes re-encodes to the
//! same text).
#![no_main]

use envelope::format::{
    decode_base64, decode_sealed_plaintext, encode_base64, encode_sealed_at, parse_sealed_at, put_sealed_plaintext,
};
use envelope::{KeyName, TrustedKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((attributes, offset)) = decode_sealed_plaintext(bytes) {
        let data = &bytes[offset..];
        let mut again = Vec::new();
        put_sealed_plaintext(&mut again, data, &attributes);
        let (reparsed, reoffset) = decode_sealed_plaintext(&again).expect("a re-encoded list parses");
        assert_eq!(reparsed, attributes);
        assert_eq!(&again[reoffset..], data);
        assert_eq!(again, bytes, "only the canonical encoding of a list parses");
    }
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(name) = text.parse::<KeyName>() {
        let reparsed: KeyName = name.to_string().parse().expect("a key name's text parses");
        assert_eq!(reparsed, name);
        let trusted = TrustedKeys::from_patterns([name.to_string()]).expect("a key name is a pattern");
        assert!(trusted.allows(&name));
    }
    let _ = TrustedKeys::from_patterns(text.split(','));
    if let Some(decoded) = decode_base64(text) {
        assert_eq!(encode_base64(&decoded), text, "only canonical base64 decodes");
    }
    if let Some(micros) = parse_sealed_at(text) {
        assert_eq!(encode_sealed_at(micros), text, "only canonical seal times parse");
    }
});
