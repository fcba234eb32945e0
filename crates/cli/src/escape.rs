//! Text from a message, made safe to show a person: control characters escaped, so
//! that no attribute, key name, reason detail or payload can start a line of its own,
//! move the cursor or recolour a terminal, or reorder what is shown.
//!
//! Whoever can publish to the bus chooses these bytes. Printed raw, a newline in an
//! attribute forged a whole `OPENED` line in `debug-subscriber`'s output; in a log it
//! forges an entry. JSON output needs none of this (its encoder escapes), so only text
//! for people goes through [`Escaped`].

use std::fmt::{self, Write as _};

/// Shows its text with every control character, bidirectional-text control and line
/// or paragraph separator escaped (`\n`, `\r`, `\t`, `\u{1b}`, `\u{202e}`, ...); the
/// rest as it is.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found a char");
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                _ => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// `text` escaped, as a `String`.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    write!(out, "{}", Escaped(text)).expect("a String takes any text");
    out
}

/// Characters that change how the text around them is shown rather than show
/// themselves: C0 and C1 controls and DEL, the bidirectional formatting characters
/// (Trojan Source, CVE-2021-42574), and Unicode's line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    // A forged line cannot start: every character that moves to a new line, moves the
    // cursor or recolours is shown escaped, and nothing else changes.
    #[test]
    fn escapes_what_would_forge_a_line_or_restyle_a_terminal_and_nothing_else() {
        let hostile = "a\nOPENED 1 mode=encrypt\r\x1b[31mred\x07\u{85}\u{202e}txt\u{2028}end\t!";
        assert_eq!(
            escaped(hostile),
            "a\\nOPENED 1 mode=encrypt\\r\\u{1b}[31mred\\u{7}\\u{85}\\u{202e}txt\\u{2028}end\\t!"
        );
        let plain = "it's a fox's den: été 🔑 C:\\path \"quoted\"";
        assert_eq!(escaped(plain), plain);
        assert!(!escaped(hostile).chars().any(needs_escape));
    }
}
